import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { endSocketWithProblem } from './problem';

/**
 * Requests Node's HTTP parser rejects before express sees them (broken framing, control
 * characters in headers, oversized headers) still get a problem+json answer, not a bare 400.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    endSocketWithProblem(
      socket,
      err.code === 'HPE_HEADER_OVERFLOW'
        ? {
            status: 431,
            title: 'Request header fields too large',
            slug: 'headers-too-large',
            detail: 'The request headers are larger than this server accepts.',
          }
        : {
            status: 400,
            title: 'Malformed request',
            slug: 'malformed-request',
            detail: 'The request is not valid HTTP/1.1 (framing or header syntax).',
          },
    );
  });
}

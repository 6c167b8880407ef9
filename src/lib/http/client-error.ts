import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { PROBLEM_BASE } from './problem';

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
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const status = tooLarge ? 431 : 400;
    const id = randomUUID();
    const body = JSON.stringify({
      type: PROBLEM_BASE + (tooLarge ? 'headers-too-large' : 'malformed-request'),
      title: tooLarge ? 'Request header fields too large' : 'Malformed request',
      status,
      detail: tooLarge
        ? 'The request headers are larger than this server accepts.'
        : 'The request is not valid HTTP/1.1 (framing or header syntax).',
      request_id: id,
    });
    socket.end(
      `HTTP/1.1 ${status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
        `Content-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${id}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

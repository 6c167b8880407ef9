import type { Response } from 'express';
import helmet, { type HelmetOptions } from 'helmet';

/**
 * Helmet's headers, computed once at startup: helmet runs a dozen small middlewares per
 * request, yet with static options (no per-request CSP nonce) they set the same values every
 * time. Here they are recorded from one dry run and set in a single loop.
 */
export function securityHeaders(options: HelmetOptions): (res: Response) => void {
  const headers: Array<[string, string]> = [];
  const recorder = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers.push([name, Array.isArray(value) ? value.join(', ') : String(value)]);
      return recorder;
    },
    removeHeader() {
      /* x-powered-by: the app never sets it */
    },
  };
  let ran = false;
  helmet(options)({} as never, recorder as unknown as Response, () => (ran = true));
  if (!ran) throw new Error('helmet did not finish synchronously; its headers cannot be precomputed');
  return (res) => {
    for (let i = 0; i < headers.length; i++) res.setHeader(headers[i][0], headers[i][1]);
  };
}

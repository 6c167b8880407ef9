import { randomUUID } from 'node:crypto';
import type { Request, Response } from 'express';

const CLIENT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A well-formed client X-Request-Id, else a new one (REST requests and WebSocket upgrades alike). */
export const requestIdFor = (given: string | undefined): string =>
  given && CLIENT_ID.test(given) ? given : randomUUID();

/** Echoes a well-formed client X-Request-Id, or mints one; every response carries it. */
export function setRequestId(req: Request, res: Response) {
  const id = requestIdFor(req.get('x-request-id'));
  res.locals.requestId = id;
  res.setHeader('X-Request-Id', id);
}

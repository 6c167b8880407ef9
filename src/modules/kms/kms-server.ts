import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { z } from '../../lib/zod';
import type { Logger } from '../../lib/logger';
import { createKeyring } from './keyring';
import { createAuditLog, createFileKekStore } from './kms-file-store';
import { KmsRefused } from './kms-types';

export const kmsConfigSchema = z.object({
  KMS_PORT: z.coerce.number().int().min(0).max(65535).default(8090),
  KMS_HOST: z.string().min(1).default('127.0.0.1'),
  KMS_DATA_DIR: z.string().min(1).default('./.data/kms'),
  /** name=token pairs, comma-separated; tokens of at least 32 characters. */
  KMS_CALLERS: z
    .string()
    .min(1, 'is required: name=token pairs, e.g. api=<32+ random characters>')
    .transform((s, ctx) => {
      const callers: Array<{ name: string; hash: Buffer }> = [];
      for (const pair of s.split(',')) {
        const [name, token] = pair.split('=');
        if (!name || !token || token.length < 32) {
          ctx.addIssue({ code: 'custom', message: 'each entry must be name=token with a token of 32+ characters' });
          return z.NEVER;
        }
        callers.push({ name: name.trim(), hash: createHash('sha256').update(token.trim()).digest() });
      }
      return callers;
    }),
});
export type KmsConfig = z.infer<typeof kmsConfigSchema>;

const kekIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,128}$/);
const wrapBody = z.object({ plaintext: z.string().min(1).max(128), context: z.string().max(512) }).strict();
const wrappedBody = z
  .object({
    kek_id: z.string(),
    kek_version: z.number().int().min(1),
    wrapped: z.string().min(1).max(512),
    context: z.string().max(512),
  })
  .strict();

const REFUSED_STATUS: Record<KmsRefused['reason'], number> = {
  retired: 410,
  integrity: 422,
  unknown: 404,
  denied: 403,
  invalid: 409,
};

/**
 * The external KMS: holds KEKs in its data directory, wraps and unwraps data keys for known
 * callers (bearer tokens compared in constant time over their SHA-256), and appends every
 * /v1 request — caller, operation, key id, version, outcome — to its audit log.
 */
export function createKmsServer(config: KmsConfig, logger: Logger): Express {
  const ring = createKeyring(createFileKekStore(config.KMS_DATA_DIR), 0);
  const audit = createAuditLog(config.KMS_DATA_DIR);
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '16kb' }));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  function callerOf(req: Request): string | null {
    const m = /^Bearer (.+)$/.exec(req.header('authorization') ?? '');
    if (!m) return null;
    const hash = createHash('sha256').update(m[1]).digest();
    let found: string | null = null;
    for (const c of config.KMS_CALLERS) if (timingSafeEqual(c.hash, hash)) found = c.name;
    return found;
  }

  type Op = (kekId: string, req: Request) => Promise<{ body: unknown; version?: number }>;
  function route(method: 'get' | 'post', path: string, op: string, handler: Op) {
    app[method](path, async (req, res) => {
      const caller = callerOf(req);
      const kekId = String(req.params.kek_id ?? '');
      const entry: Record<string, unknown> = {
        caller: caller ?? 'unknown',
        ip: req.socket.remoteAddress,
        op,
        kek_id: kekId,
      };
      const reply = (status: number, body: unknown, extra: Record<string, unknown> = {}) => {
        audit.write({ ...entry, ...extra, status });
        res.status(status).json(body);
      };
      if (!caller) return reply(401, { detail: 'unknown caller', reason: 'denied' });
      if (!kekIdSchema.safeParse(kekId).success) return reply(400, { detail: 'bad key id', reason: 'invalid' });
      try {
        const out = await handler(kekId, req);
        reply(200, out.body, { version: out.version });
      } catch (err) {
        if (err instanceof KmsRefused)
          return reply(REFUSED_STATUS[err.reason], { detail: err.message, reason: err.reason });
        if (err instanceof z.ZodError)
          return reply(400, { detail: err.issues[0]?.message ?? 'bad request', reason: 'invalid' });
        logger.error({ err, op }, 'KMS request failed');
        reply(500, { detail: 'internal error' });
      }
    });
  }

  route('post', '/v1/keys/:kek_id/wrap', 'wrap', async (kekId, req) => {
    const b = wrapBody.parse(req.body);
    const w = await ring.wrap(kekId, Buffer.from(b.plaintext, 'base64'), b.context);
    return { body: w, version: w.kek_version };
  });
  route('post', '/v1/keys/:kek_id/unwrap', 'unwrap', async (kekId, req) => {
    const b = wrappedBody.parse(req.body);
    const key = await ring.unwrap({ ...b, kek_id: kekId }, b.context);
    return { body: { plaintext: key.toString('base64') }, version: b.kek_version };
  });
  route('post', '/v1/keys/:kek_id/rewrap', 'rewrap', async (kekId, req) => {
    const b = wrappedBody.parse(req.body);
    const w = await ring.rewrap({ ...b, kek_id: kekId }, b.context);
    return { body: w, version: w.kek_version };
  });
  route('post', '/v1/keys/:kek_id/rotate', 'rotate', async (kekId) => {
    const r = await ring.rotate(kekId);
    return { body: r, version: r.version };
  });
  route('post', '/v1/keys/:kek_id/versions/:version/retire', 'retire', async (kekId, req) => {
    const version = z.coerce.number().int().min(1).parse(req.params.version);
    await ring.retire(kekId, version);
    return { body: { kek_id: kekId, version, state: 'retired' }, version };
  });
  route('get', '/v1/keys/:kek_id', 'describe', async (kekId) => ({ body: await ring.describe(kekId) }));

  app.use((_req, res) => {
    res.status(404).json({ detail: 'not found' });
  });
  // Unreadable JSON never reaches a route: answer and audit it here.
  app.use((err: { status?: number }, req: Request, res: Response, _next: NextFunction) => {
    const status = err.status && err.status >= 400 && err.status < 500 ? err.status : 500;
    audit.write({ caller: callerOf(req) ?? 'unknown', ip: req.socket.remoteAddress, op: 'unreadable', status });
    res.status(status).json({ detail: status === 500 ? 'internal error' : 'unreadable request', reason: 'invalid' });
  });
  return app;
}

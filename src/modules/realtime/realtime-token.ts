import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest, unauthorized } from '../../lib/errors';
import type { ApiPrincipal } from '../../lib/http/route';
import type { RealtimeStore } from './realtime-store';

const PREFIX = 'rt_';

interface TokenPayload {
  v: 2;
  p: string;
  k: string;
  u: string;
  iat: number;
  exp: number;
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');
// The MAC key joins a server-only secret (server_secrets, shared by the replicas) to the
// project's signing secret: a rotation of the latter still ends every token, and a tenant who
// holds the signing secret still cannot mint tokens offline, with a lifetime of its choosing.
const mac = (server: string, secret: string, body: string) =>
  createHmac('sha256', `${server}:${secret}`).update(`progressdb-realtime:${body}`).digest();

/**
 * Short-lived tokens for clients that cannot set headers (browser WebSocket, EventSource):
 * `rt_<payload>.<hmac>`, signed with the project's signing secret, so any replica can verify
 * them with what it already stores. A token always acts as its end user (never with a secret
 * key's full access), and stops working when its key is revoked.
 */
export function createRealtimeTokens(deps: {
  db: Knex;
  store: RealtimeStore;
  /** Lifetime when the caller asks for none. */
  ttlSeconds: number;
  /** The longest lifetime minted or accepted (REALTIME_TOKEN_MAX_TTL_SECONDS). */
  maxTtlSeconds: number;
  /** The server-only part of the MAC key; by default one shared value in server_secrets. */
  serverSecret?: () => Promise<string>;
  now?: () => number;
}) {
  const now = deps.now ?? Date.now;
  let server: Promise<string> | null = null;
  const serverSecret = () =>
    (server ??= (
      deps.serverSecret ??
      (() => deps.store.serverSecret(deps.db, 'realtime_token_secret', randomBytes(32).toString('base64url')))
    )().catch((e: unknown) => {
      server = null;
      throw e;
    }));
  return {
    /** A token for the principal's user, valid `expiresIn` seconds (default ttlSeconds, at most maxTtlSeconds). */
    async issue(principal: ApiPrincipal, expiresIn?: number) {
      const ttl = expiresIn ?? Math.min(deps.ttlSeconds, deps.maxTtlSeconds);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > deps.maxTtlSeconds)
        throw badRequest(`expires_in must be 1–${deps.maxTtlSeconds} seconds (REALTIME_TOKEN_MAX_TTL_SECONDS).`);
      if (!principal.userId)
        throw badRequest(
          'A realtime token acts as an end user: send X-User-ID (and X-User-Signature with a publishable key).',
        );
      const ctx = await deps.store.keyContext(deps.db, principal.projectId, principal.keyId);
      if (!ctx) throw unauthorized('The API key is not valid or has been revoked.');
      const iat = Math.floor(now() / 1000);
      const exp = iat + ttl;
      const body = b64(
        JSON.stringify({
          v: 2,
          p: principal.projectId,
          k: principal.keyId,
          u: principal.userId,
          iat,
          exp,
        } satisfies TokenPayload),
      );
      const srv = await serverSecret();
      return {
        token: `${PREFIX}${body}.${b64(mac(srv, ctx.signingSecrets[0], body))}`,
        expires_at: new Date(exp * 1000).toISOString(),
        expires_in: ttl,
      };
    },

    async verify(token: string): Promise<ApiPrincipal> {
      const invalid = () =>
        unauthorized('The realtime token is not valid or has expired: get a new one from POST /v1/realtime/token.');
      const m = /^rt_([A-Za-z0-9_-]{1,2048})\.([A-Za-z0-9_-]{43})$/.exec(token);
      if (!m) throw invalid();
      let payload: TokenPayload;
      try {
        payload = JSON.parse(Buffer.from(m[1], 'base64url').toString('utf8')) as TokenPayload;
      } catch {
        throw invalid();
      }
      if (
        payload?.v !== 2 ||
        typeof payload.p !== 'string' ||
        typeof payload.k !== 'string' ||
        typeof payload.u !== 'string' ||
        typeof payload.iat !== 'number' ||
        typeof payload.exp !== 'number'
      )
        throw invalid();
      if (payload.exp * 1000 <= now()) throw invalid();
      // Defence in depth: a token claiming a longer life than the server mints is not one of ours.
      if (payload.exp - payload.iat > deps.maxTtlSeconds || payload.iat * 1000 > now() + 60_000) throw invalid();
      const ctx = await deps.store.keyContext(deps.db, payload.p, payload.k);
      if (!ctx) throw invalid();
      const given = Buffer.from(m[2], 'base64url');
      // Compare against every candidate so timing does not say which secret matched.
      const srv = await serverSecret();
      const ok = ctx.signingSecrets
        .map((s) => given.length === 32 && timingSafeEqual(mac(srv, s, m[1]), given))
        .some(Boolean);
      if (!ok) throw invalid();
      return {
        type: 'api',
        projectId: payload.p,
        keyId: payload.k,
        kind: 'publishable',
        userId: payload.u,
        settings: ctx.settings,
      };
    },
  };
}

export type RealtimeTokens = ReturnType<typeof createRealtimeTokens>;

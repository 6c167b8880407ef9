import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest, unauthorized } from '../../lib/errors';
import type { ApiPrincipal } from '../../lib/http/route';
import type { RealtimeStore } from './realtime-store';

const PREFIX = 'rt_';

interface TokenPayload {
  v: 1;
  p: string;
  k: string;
  u: string;
  exp: number;
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');
const mac = (secret: string, body: string) =>
  createHmac('sha256', secret).update(`progressdb-realtime:${body}`).digest();

/**
 * Short-lived tokens for clients that cannot set headers (browser WebSocket, EventSource):
 * `rt_<payload>.<hmac>`, signed with the project's signing secret, so any replica can verify
 * them with what it already stores. A token always acts as its end user (never with a secret
 * key's full access), and stops working when its key is revoked.
 */
export function createRealtimeTokens(deps: { db: Knex; store: RealtimeStore; ttlSeconds: number; now?: () => number }) {
  const now = deps.now ?? Date.now;
  return {
    async issue(principal: ApiPrincipal) {
      if (!principal.userId)
        throw badRequest(
          'A realtime token acts as an end user: send X-User-ID (and X-User-Signature with a publishable key).',
        );
      const ctx = await deps.store.keyContext(deps.db, principal.projectId, principal.keyId);
      if (!ctx) throw unauthorized('The API key is not valid or has been revoked.');
      const exp = Math.floor(now() / 1000) + deps.ttlSeconds;
      const body = b64(
        JSON.stringify({
          v: 1,
          p: principal.projectId,
          k: principal.keyId,
          u: principal.userId,
          exp,
        } satisfies TokenPayload),
      );
      return {
        token: `${PREFIX}${body}.${b64(mac(ctx.signingSecrets[0], body))}`,
        expires_at: new Date(exp * 1000).toISOString(),
        expires_in: deps.ttlSeconds,
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
        payload?.v !== 1 ||
        typeof payload.p !== 'string' ||
        typeof payload.k !== 'string' ||
        typeof payload.u !== 'string' ||
        typeof payload.exp !== 'number'
      )
        throw invalid();
      if (payload.exp * 1000 <= now()) throw invalid();
      const ctx = await deps.store.keyContext(deps.db, payload.p, payload.k);
      if (!ctx) throw invalid();
      const given = Buffer.from(m[2], 'base64url');
      // Compare against every candidate so timing does not say which secret matched.
      const ok = ctx.signingSecrets
        .map((s) => given.length === 32 && timingSafeEqual(mac(s, m[1]), given))
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

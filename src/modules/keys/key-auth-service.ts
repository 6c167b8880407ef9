import { createHmac, timingSafeEqual } from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { Knex } from 'knex';
import { badRequest, unauthorized } from '../../lib/errors';
import { userIdSchema } from '../../lib/ids';
import type { ApiPrincipal } from '../../lib/http/route';
import { API_KEY_LENGTH, apiKeyHashText, parseApiKey, type KeyKind } from './api-key';
import type { KeysStore } from './keys-store';

interface KeyContext {
  projectId: string;
  keyId: string;
  kind: KeyKind;
  settings: Record<string, unknown>;
  signingSecrets: string[];
  previousExpiresAt: number | null;
}

export const signUserId = (secret: string, userId: string) => createHmac('sha256', secret).update(userId).digest('hex');

function signatureMatches(secret: string, userId: string, signature: string): boolean {
  const wellFormed = /^[0-9a-f]{64}$/.test(signature);
  const expected = createHmac('sha256', secret).update(userId).digest();
  const given = wellFormed ? Buffer.from(signature, 'hex') : Buffer.alloc(32);
  // Always compare, even for malformed input, so timing says nothing about the secret.
  return timingSafeEqual(expected, given) && wellFormed;
}

const MAX_CACHED = 10_000;
/** Verified (user, signature) pairs kept per key context; cleared when full. */
const MAX_VERIFIED = 10_000;
const TOUCH_INTERVAL_MS = 60_000;
/**
 * How long a key hash the database did not know is answered from memory. A key is created with
 * 256 random bits and never presented before it exists, so remembering a miss cannot hide a
 * new key; revoked keys stay revoked.
 */
const NEGATIVE_TTL_MS = 60_000;
const MAX_NEGATIVE = 50_000;
/** A bad signature on a cached key re-reads the project (a rotation) at most this often per key. */
const FRESH_READ_INTERVAL_MS = 1_000;

/** A signed user token (X-User-Token): HS256 under the project's signing secret, like Stream's user tokens. */
export function signUserToken(secret: string, userId: string, expiresInSeconds: number, nowMs = Date.now()) {
  const iat = Math.floor(nowMs / 1000);
  return jwt.sign({ user_id: userId, iat, exp: iat + expiresInSeconds }, secret, { algorithm: 'HS256' });
}

/**
 * Resolves API keys to principals. Live keys are cached for KEY_CACHE_TTL_MS, so a revocation
 * takes effect everywhere within that bound even without a notification; `invalidate` makes it
 * immediate on this replica.
 */
export function createKeyAuthService(deps: {
  db: Knex;
  keysStore: KeysStore;
  cacheTtlMs: number;
  /** The longest lifetime (exp − iat) a user token may claim. */
  userTokenMaxTtlSeconds?: number;
  now?: () => number;
}) {
  const now = deps.now ?? Date.now;
  const cache = new Map<string, { ctx: KeyContext; expires: number }>();
  const lastTouched = new Map<string, number>();
  const unknown = new Map<string, number>();
  const freshReadAt = new Map<string, number>();
  const notBefore = new Map<string, { projectId: string; value: number | null; expires: number }>();
  const maxTokenTtl = deps.userTokenMaxTtlSeconds ?? 30 * 86_400;

  async function userNotBefore(projectId: string, userId: string): Promise<number | null> {
    const k = `${projectId}\u0000${userId}`;
    const hit = notBefore.get(k);
    if (hit && hit.expires > now()) return hit.value;
    const value = await deps.keysStore.userTokensNotBefore(deps.db, projectId, userId);
    if (notBefore.size >= MAX_NEGATIVE) notBefore.delete(notBefore.keys().next().value!);
    if (deps.cacheTtlMs > 0) notBefore.set(k, { projectId, value, expires: now() + deps.cacheTtlMs });
    return value;
  }

  /** The user id of a valid, unexpired, unrevoked user token under one of the key's signing secrets. */
  async function userFromToken(ctx: KeyContext, token: string): Promise<string> {
    const invalid = (why: string) => unauthorized(`X-User-Token is not valid: ${why}.`);
    const secrets =
      ctx.previousExpiresAt !== null && ctx.previousExpiresAt > now()
        ? ctx.signingSecrets
        : ctx.signingSecrets.slice(0, 1);
    let claims: jwt.JwtPayload | null = null;
    let expired = false;
    for (const secret of secrets) {
      try {
        const c = jwt.verify(token, secret, { algorithms: ['HS256'], clockTimestamp: Math.floor(now() / 1000) });
        if (typeof c === 'object') claims = c;
        break;
      } catch (e) {
        if ((e as Error).name === 'TokenExpiredError') expired = true;
      }
    }
    if (!claims) throw invalid(expired ? 'it has expired; get a new one from your backend' : 'bad signature or format');
    const { user_id: userId, exp, iat } = claims as { user_id?: unknown; exp?: unknown; iat?: unknown };
    if (typeof exp !== 'number') throw invalid('it has no exp (tokens must expire)');
    if (typeof iat !== 'number') throw invalid('it has no iat');
    if (exp - iat > maxTokenTtl) throw invalid(`it lives longer than ${maxTokenTtl} s (USER_TOKEN_MAX_TTL_SECONDS)`);
    const parsed = userIdSchema.safeParse(userId);
    if (!parsed.success) throw invalid('user_id must be 1–128 printable ASCII characters without spaces');
    const revokedBefore = await userNotBefore(ctx.projectId, parsed.data);
    if (revokedBefore !== null && iat * 1000 < revokedBefore)
      throw invalid("it was issued before the user's tokens were revoked");
    return parsed.data;
  }
  let lookups = 0;
  /**
   * Reads of a key in flight, so the requests that find it expired together share one database
   * read instead of each making its own (at a few hundred requests a second, every expiry of a
   * hot key used to send a burst of identical reads, and each of those requests waited for its
   * own). `generation` moves on every invalidation: a read begun before one is neither joined
   * nor cached, so a revocation is never undone by a read that started before it.
   */
  const reading = new Map<string, { generation: number; promise: Promise<KeyContext> }>();
  let generation = 0;

  /**
   * The cached context of a live key, without a promise (the common case on every request). In
   * the last quarter of its life the entry is re-read in the background, so a key in use does not
   * expire under its requests; it is still never used past `expires`.
   */
  function cached(rawKey: string): KeyContext | undefined {
    // Only a key of the right length is hashed, so a huge header costs nothing.
    if (rawKey.length !== API_KEY_LENGTH) return undefined;
    const cacheKey = apiKeyHashText(rawKey);
    const hit = cache.get(cacheKey);
    if (!hit) return undefined;
    const left = hit.expires - now();
    if (left <= 0) return undefined;
    if (left < deps.cacheTtlMs / 4) read(cacheKey).catch(() => undefined);
    return hit.ctx;
  }

  function read(cacheKey: string): Promise<KeyContext> {
    const current = reading.get(cacheKey);
    if (current && current.generation === generation) return current.promise;
    const promise = readKey(cacheKey).finally(() => {
      if (reading.get(cacheKey)?.promise === promise) reading.delete(cacheKey);
    });
    reading.set(cacheKey, { generation, promise });
    return promise;
  }

  async function readKey(cacheKey: string): Promise<KeyContext> {
    const started = generation;
    lookups++;
    const row = await deps.keysStore.findByHash(deps.db, Buffer.from(cacheKey, 'base64'));
    if (!row) {
      cache.delete(cacheKey);
      if (unknown.size >= MAX_NEGATIVE) unknown.delete(unknown.keys().next().value!);
      unknown.set(cacheKey, now() + NEGATIVE_TTL_MS);
      throw unauthorized('The API key is not valid or has been revoked.');
    }
    const current = started === generation;
    if (current) unknown.delete(cacheKey);
    const ctx: KeyContext = {
      projectId: row.project_id,
      keyId: row.key_id,
      kind: row.kind,
      settings: row.settings ?? {},
      signingSecrets: [row.signing_secret, ...(row.previous_signing_secret ? [row.previous_signing_secret] : [])],
      previousExpiresAt: row.previous_signing_secret_expires_at
        ? Date.parse(row.previous_signing_secret_expires_at)
        : null,
    };
    if (deps.cacheTtlMs > 0 && current) {
      if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
      cache.set(cacheKey, { ctx, expires: now() + deps.cacheTtlMs });
    }
    touch(ctx);
    return ctx;
  }

  /** The key's context read from the database (a miss, or `fresh` after a bad signature). */
  async function lookup(rawKey: string, opts: { fresh?: boolean } = {}): Promise<KeyContext> {
    if (rawKey.length !== API_KEY_LENGTH) throw unauthorized('The API key is not valid.');
    const cacheKey = apiKeyHashText(rawKey);
    const hit = cache.get(cacheKey);
    if (!opts.fresh && hit && hit.expires > now()) return hit.ctx;
    // A cached hash was a well-formed key when it was cached; a miss checks format and checksum.
    if (!parseApiKey(rawKey)) throw unauthorized('The API key is not valid.');
    const missed = unknown.get(cacheKey);
    if (missed !== undefined && missed > now()) throw unauthorized('The API key is not valid or has been revoked.');
    // A fresh read (a signing-secret rotation suspected) must not join one begun before it.
    return opts.fresh ? readKey(cacheKey) : read(cacheKey);
  }

  /**
   * Signatures already verified under a key context, by user and signature: a browser sends the
   * same pair on every request, and its HMAC was most of a publishable-key read's own CPU. The
   * value is how long the pair stays valid (Infinity under the current secret, the previous
   * secret's expiry under that one). A new context (a cache refresh, a rotation, a revocation
   * notice) starts empty, so nothing verified under old secrets outlives them. Only verified
   * pairs are kept: a pair seen for the first time is always checked in constant time.
   */
  const verified = new WeakMap<KeyContext, Map<string, number>>();

  function signatureValid(ctx: KeyContext, userId: string, signature: string | undefined): boolean {
    const pair = `${userId}\u0000${signature ?? ''}`;
    let known = verified.get(ctx);
    const until = known?.get(pair);
    if (until !== undefined && now() < until) return true;
    const withPrevious =
      ctx.signingSecrets.length > 1 && ctx.previousExpiresAt !== null && ctx.previousExpiresAt > now();
    // Check every candidate secret, so the time taken does not reveal which one matched.
    const current = signatureMatches(ctx.signingSecrets[0], userId, signature ?? '');
    const previous = withPrevious && signatureMatches(ctx.signingSecrets[1], userId, signature ?? '');
    if (!current && !previous) return false;
    if (!known) verified.set(ctx, (known = new Map()));
    if (known.size >= MAX_VERIFIED) known.clear();
    known.set(pair, current ? Infinity : ctx.previousExpiresAt!);
    return true;
  }

  // last_used_at is advisory: written at most once a minute per key per replica, off the
  // request path, so a hot key never turns into a hot row.
  function touch(ctx: KeyContext) {
    const last = lastTouched.get(ctx.keyId) ?? 0;
    if (now() - last < TOUCH_INTERVAL_MS) return;
    lastTouched.set(ctx.keyId, now());
    deps.keysStore.touch(deps.db, ctx.projectId, ctx.keyId).catch(() => undefined);
  }

  return {
    /**
     * The principal for a key plus the optional end-user headers. Publishable keys must
     * carry a user id signed with the project's signing secret.
     */
    async authenticate(
      rawKey: string | undefined,
      userIdHeader: string | undefined,
      signature: string | undefined,
      userToken?: string,
    ): Promise<ApiPrincipal> {
      if (!rawKey) throw unauthorized('Send an API key as "Authorization: Bearer <key>" or "X-API-Key: <key>".');
      const key = rawKey.trim();
      const hit = cached(key);
      let ctx = hit ?? (await lookup(key));
      let userId: string | null = null;
      if (userIdHeader !== undefined) {
        const parsed = userIdSchema.safeParse(userIdHeader);
        if (!parsed.success) throw unauthorized('X-User-ID must be 1–128 printable ASCII characters without spaces.');
        userId = parsed.data;
      }
      if (userToken !== undefined && ctx.kind !== 'admin') {
        // A signed, expiring user token stands in for X-User-ID + X-User-Signature.
        const tokenUser = await userFromToken(ctx, userToken.trim());
        if (userId !== null && userId !== tokenUser)
          throw badRequest('X-User-ID and X-User-Token name different users; send the token alone.');
        return {
          type: 'api',
          projectId: ctx.projectId,
          keyId: ctx.keyId,
          kind: ctx.kind,
          userId: tokenUser,
          settings: ctx.settings,
        };
      }
      if (ctx.kind === 'publishable') {
        if (!userId) throw unauthorized('Publishable keys must send X-User-ID and X-User-Signature.');
        let ok = signatureValid(ctx, userId, signature);
        // A cached key may predate a signing-secret rotation: a signature made with the new
        // secret must verify at once, so re-read the project before refusing.
        // Throttled per key, so wrong signatures on a valid key cannot each cost a database read.
        if (!ok && hit && now() - (freshReadAt.get(ctx.keyId) ?? -Infinity) >= FRESH_READ_INTERVAL_MS) {
          if (freshReadAt.size >= MAX_CACHED) freshReadAt.delete(freshReadAt.keys().next().value!);
          freshReadAt.set(ctx.keyId, now());
          ctx = await lookup(key, { fresh: true });
          ok = ctx.kind === 'publishable' && signatureValid(ctx, userId, signature);
        }
        if (!ok)
          throw unauthorized('X-User-Signature does not match X-User-ID (or send X-User-Token, a signed user token).');
      }
      return {
        type: 'api',
        projectId: ctx.projectId,
        keyId: ctx.keyId,
        kind: ctx.kind,
        userId,
        settings: ctx.settings,
      };
    },

    /** Key lookups that reached the database since start (for tests and metrics). */
    lookups: () => lookups,

    /** Drops cached keys (all of them, or one project's), e.g. on a revocation notice. */
    invalidate(projectId?: string) {
      generation++;
      if (!projectId) {
        notBefore.clear();
        return cache.clear();
      }
      for (const [k, v] of cache) if (v.ctx.projectId === projectId) cache.delete(k);
      for (const [k, v] of notBefore) if (v.projectId === projectId) notBefore.delete(k);
    },
  };
}

export type KeyAuthService = ReturnType<typeof createKeyAuthService>;

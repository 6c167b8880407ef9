import ipaddr from 'ipaddr.js';
import { z } from './lib/zod';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const url = z.string().url();
/** Comma-separated seconds, e.g. "5,300,1800". */
const secondsList = z
  .string()
  .regex(/^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$/, 'must be comma-separated seconds, e.g. 5,300,1800')
  .transform((s) => s.split(',').map((x) => Number(x.trim())))
  .refine((a) => a.length <= 50, 'at most 50 retries');

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);
/** One entry of express's trust-proxy list: a preset name, an address, a CIDR or address/netmask range. */
function proxyEntryValid(entry: string): boolean {
  if (PROXY_NAMES.has(entry)) return true;
  const slash = entry.indexOf('/');
  if (slash === -1) return ipaddr.isValid(entry);
  const [addr, range] = [entry.slice(0, slash), entry.slice(slash + 1)];
  if (!ipaddr.isValid(addr)) return false;
  if (/^\d{1,3}$/.test(range)) return Number(range) <= (ipaddr.parse(addr).kind() === 'ipv4' ? 32 : 128);
  return ipaddr.isValid(range);
}

/**
 * express's `trust proxy` in every form it takes: true/false, a hop count, or a comma-separated
 * list of preset names, addresses and ranges. Checked here, so a typo is a clear configuration
 * error at start instead of a TypeError thrown from inside express.
 */
export const trustProxySchema = z
  .string()
  .trim()
  .transform((v, ctx): boolean | number | string[] => {
    const lower = v.toLowerCase();
    if (lower === 'true') return true;
    if (lower === 'false') return false;
    if (/^\d+$/.test(v)) return Number(v);
    const entries = v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const bad = entries.filter((e) => !proxyEntryValid(e));
    if (entries.length === 0 || bad.length > 0) {
      ctx.addIssue({
        code: 'custom',
        message: `must be true, false, a hop count, or a comma-separated list of loopback/linklocal/uniquelocal, addresses and CIDR ranges${bad.length ? ` (not understood: ${bad.join(', ')})` : ''}`,
      });
      return z.NEVER;
    }
    return entries;
  });

/** Every setting the service reads from the environment, validated once at start. */
export const configSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  PORT: int(0, 65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  /** The owner's connection, for migrations only; the service itself connects with DATABASE_URL. */
  DATABASE_MIGRATION_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  /** Granted what the service needs after each migration (created NOLOGIN if missing). */
  DATABASE_RUNTIME_ROLE: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case PostgreSQL role name')
    .default('progressdb_app'),
  DATA_DIR: z.string().min(1).default('./.data'),
  EMBEDDED_PG_PORT: int(1, 65535).default(54329),
  DB_POOL_MAX: int(2, 200).default(20),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  PUBLIC_URL: url.optional(),
  TRUST_PROXY: trustProxySchema.default(['loopback']),
  MAX_REQUEST_BYTES: int(1024, 64 * 1024 * 1024).default(4 * 1024 * 1024),
  MAX_MESSAGE_BYTES: int(16, 16 * 1024 * 1024).default(64 * 1024),
  MAX_REACTIONS_PER_MESSAGE: int(1, 10_000).default(50),
  MAX_JSON_DEPTH: int(2, 256).default(32),
  KEY_CACHE_TTL_MS: int(0, 60_000).default(2_000),
  /** The longest lifetime (exp − iat) a signed user token (X-User-Token) may claim. */
  USER_TOKEN_MAX_TTL_SECONDS: int(60, 365 * 86_400).default(30 * 86_400),
  SIGNING_SECRET_GRACE_SECONDS: int(0, 30 * 86400).default(86400),
  INGEST_MAX_BATCH: int(1, 10_000).default(512),
  INGEST_MAX_WAIT_MS: int(0, 1_000).default(0),
  // Two lanes: batch appends (100 messages a request) are PostgreSQL-bound and a second lane lets
  // two groups' statements run at once; single appends showed no consistent difference.
  INGEST_CONCURRENCY: int(1, 64).default(2),
  INGEST_QUEUE_LIMIT: int(1, 1_000_000).default(20_000),
  WEB_CONCURRENCY: int(1, 64).default(1),
  SESSION_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  SESSION_TTL_SECONDS: int(60, 30 * 86400).default(3600),
  GOOGLE_CLIENT_ID: z.string().min(1).optional(),
  GOOGLE_CLIENT_SECRET: z.string().min(1).optional(),
  GOOGLE_CALLBACK_URL: url.optional(),
  GOOGLE_AUTHORIZATION_URL: url.optional(),
  GOOGLE_TOKEN_URL: url.optional(),
  GOOGLE_USERINFO_URL: url.optional(),
  SEED_DEV_PROJECT: bool.default(true),
  SHUTDOWN_TIMEOUT_MS: int(0, 600_000).default(10_000),
  REALTIME_HEARTBEAT_MS: int(100, 300_000).default(25_000),
  REALTIME_PRESENCE_GRACE_MS: int(0, 600_000).default(5_000),
  REALTIME_MAX_BUFFERED_BYTES: int(16 * 1024, 256 * 1024 * 1024).default(1024 * 1024),
  REALTIME_TOKEN_TTL_SECONDS: int(10, 86_400).default(300),
  /** How long a live subscriber's unsent backlog may stay above REALTIME_MAX_BUFFERED_BYTES before it is cut off. */
  REALTIME_SLOW_CONSUMER_MS: int(100, 600_000).default(5_000),
  /** Per-replica budget for serialised message pages (0 turns the page cache off). */
  PAGE_CACHE_BYTES: int(0, 4 * 1024 * 1024 * 1024).default(32 * 1024 * 1024),
  /** How long a page of an encrypting project, decrypted, may be served from the page cache (0: never). */
  PAGE_CACHE_SEALED_TTL_MS: int(0, 60_000).default(2_000),
  /** The longest realtime token the server mints (a client may ask for less, never more). */
  REALTIME_TOKEN_MAX_TTL_SECONDS: int(10, 86_400).default(3_600),
  RATE_LIMIT_ENABLED: bool.default(true),
  RATE_LIMIT_WINDOW_SECONDS: int(1, 86_400).default(60),
  RATE_LIMIT_READ: int(1, 1_000_000).default(6_000),
  RATE_LIMIT_WRITE: int(1, 1_000_000).default(3_000),
  RATE_LIMIT_AUTH: int(1, 1_000_000).default(300),
  RATE_LIMIT_IP: int(1, 1_000_000).default(300),
  /**
   * Operator ceilings on what a project may set in rate_limits, per RATE_LIMIT_WINDOW_SECONDS
   * (a project's limit is scaled to that window before the comparison).
   */
  RATE_LIMIT_MAX_READ: int(1, 10_000_000).default(60_000),
  RATE_LIMIT_MAX_WRITE: int(1, 10_000_000).default(30_000),
  RATE_LIMIT_MAX_AUTH: int(1, 10_000_000).default(3_000),
  /** A key acting as many users (X-User-ID) is limited in aggregate to this many times the per-user limit. */
  RATE_LIMIT_KEY_FACTOR: int(1, 100_000).default(20),
  /** Live connections (WebSocket + SSE) per replica, per end user, per key and per project. */
  REALTIME_MAX_CONNECTIONS_PER_USER: int(1, 1_000_000).default(20),
  REALTIME_MAX_CONNECTIONS_PER_KEY: int(1, 10_000_000).default(10_000),
  REALTIME_MAX_CONNECTIONS_PER_PROJECT: int(1, 10_000_000).default(20_000),
  /** Failed authentications (unknown keys, bad signatures, bad tokens) per client IP per window. */
  RATE_LIMIT_AUTH_FAILURES: int(1, 1_000_000).default(60),
  SLOW_QUERY_MS: int(0, 3_600_000).default(250),
  SLOW_QUERY_SAMPLE_RATE: z.coerce.number().min(0).max(1).default(1),
  RETENTION_ENABLED: bool.default(true),
  RETENTION_INTERVAL_MS: int(100, 7 * 86_400_000).default(3_600_000),
  RETENTION_BATCH_SIZE: int(10, 100_000).default(1_000),
  LISTEN_PROBE_INTERVAL_MS: int(0, 600_000).default(10_000),
  LISTEN_PROBE_TIMEOUT_MS: int(50, 600_000).default(5_000),
  IDEMPOTENCY_TTL_HOURS: int(1, 24 * 30).default(24),
  IDEMPOTENCY_SWEEP_INTERVAL_MS: int(100, 86_400_000).default(600_000),
  IDEMPOTENCY_SWEEP_BATCH: int(1, 100_000).default(1_000),
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  KMS_MODE: z.enum(['embedded', 'external']).default('embedded'),
  KMS_MASTER_KEY: z.string().min(1).optional(),
  KMS_MASTER_KEY_FILE: z.string().min(1).optional(),
  KMS_URL: url.optional(),
  KMS_TOKEN: z.string().min(32, 'must be at least 32 characters').optional(),
  KMS_TIMEOUT_MS: int(50, 60_000).default(2_000),
  KMS_HEALTH_INTERVAL_MS: int(100, 60_000).default(1_000),
  DEK_CACHE_TTL_MS: int(0, 86_400_000).default(300_000),
  DEK_CACHE_MAX: int(0, 10_000_000).default(10_000),
  KEY_ROTATION_BATCH: int(1, 10_000).default(100),
  KEY_ROTATION_GRACE_MS: int(0, 600_000).default(3_000),
  WEBHOOK_WORKER_ENABLED: bool.default(true),
  WEBHOOK_CONCURRENCY: int(1, 1_000).default(128),
  WEBHOOK_POLL_MS: int(10, 60_000).default(1_000),
  WEBHOOK_CLAIM_INTERVAL_MS: int(0, 10_000).default(25),
  WEBHOOK_TIMEOUT_MS: int(100, 120_000).default(15_000),
  WEBHOOK_CLAIM_MARGIN_SECONDS: int(1, 3_600).default(15),
  // 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 20 h: about three days in all, then dead.
  WEBHOOK_RETRY_SCHEDULE: secondsList.default([5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 72000]),
  WEBHOOK_RETRY_JITTER: z.coerce.number().min(0).max(1).default(0.2),
  WEBHOOK_ALLOW_HTTP: bool.optional(),
  WEBHOOK_ALLOW_PRIVATE_TARGETS: bool.default(false),
  WEBHOOK_SECRET_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
  WEBHOOK_SECRET_GRACE_SECONDS: int(0, 7 * 86_400).default(86_400),
  WEBHOOK_DELIVERED_RETENTION_HOURS: int(1, 24 * 365).default(72),
});

export type Config = Readonly<z.infer<typeof configSchema>>;

export class ConfigError extends Error {}

/** Parses the environment; the error lists every bad variable with what to fix. */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  overrides: Partial<Record<string, string>> = {},
): Config {
  const source: Record<string, string | undefined> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const value = overrides[key] ?? env[key];
    source[key] = value === '' ? undefined : value;
  }
  const parsed = configSchema.safeParse(source);
  if (!parsed.success) {
    // The rejected value helps, except for secrets, which must never reach a log.
    const shown = (key: string) =>
      /SECRET|PASSWORD|KEY|TOKEN/.test(key) ||
      (key.includes('DATABASE_') && key.endsWith('URL')) ||
      source[key] === undefined
        ? ''
        : ` (got ${JSON.stringify(source[key])})`;
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}${shown(String(i.path[0]))}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  return Object.freeze(parsed.data);
}

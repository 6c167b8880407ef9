import { z } from '../../lib/zod';
import { encryptedFieldsSchema } from '../encryption/field-paths';

const limitSchema = z
  .object({
    limit: z.number().int().min(1).max(1_000_000),
    window_seconds: z.number().int().min(1).max(86_400),
  })
  .strict();

const cidrSchema = z
  .string()
  .max(64)
  .regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'must be an IP address or CIDR range, e.g. 203.0.113.0/24');

const originSchema = z
  .string()
  .max(256)
  .regex(
    /^(https?:\/\/[^/\s]+|\*)$/,
    'must be an origin like https://app.example.com (scheme and host, no path), http://localhost:* (any port), or *',
  );

/**
 * Per-project settings, stored in projects.settings (jsonb). Every field is optional: absent
 * means the service default. Enforcement lives with each feature (rate limits, guards,
 * retention …); this schema is the one definition they all read.
 */
export const projectSettingsSchema = z
  .object({
    allowed_origins: z.array(originSchema).max(100).optional(),
    ip_allowlist: z.array(cidrSchema).max(100).optional(),
    rate_limits: z
      .object({ read: limitSchema.optional(), write: limitSchema.optional(), auth: limitSchema.optional() })
      .strict()
      .optional(),
    retention_days: z.number().int().min(1).max(36_500).nullable().optional(),
    deleted_thread_retention_days: z.number().int().min(1).max(36_500).nullable().optional(),
    max_messages_per_thread: z.number().int().min(1).max(1_000_000).nullable().optional(),
    max_message_bytes: z
      .number()
      .int()
      .min(16)
      .max(1024 * 1024)
      .optional(),
    encrypted_fields: encryptedFieldsSchema.optional(),
    webhooks: z
      .array(
        z.object({ url: z.string().url().max(2048), events: z.array(z.string().max(64)).max(20).optional() }).strict(),
      )
      .max(20)
      .optional(),
  })
  .strict()
  .openapi('ProjectSettings');

export type ProjectSettings = z.infer<typeof projectSettingsSchema>;

/**
 * A view derived from a project's settings (parsed limits, CIDR ranges …), computed once per
 * settings object: a cached key shares one settings object across all its requests.
 */
export function fromSettings<T>(derive: (s: ProjectSettings) => T): (raw: Record<string, unknown>) => T {
  const cache = new WeakMap<object, T>();
  return (raw) => {
    if (cache.has(raw)) return cache.get(raw)!;
    const value = derive(readSettings(raw));
    cache.set(raw, value);
    return value;
  };
}

/** Settings as stored; anything unreadable counts as absent rather than failing a request. */
export function readSettings(raw: unknown): ProjectSettings {
  const parsed = projectSettingsSchema.safeParse(raw ?? {});
  return parsed.success ? parsed.data : {};
}

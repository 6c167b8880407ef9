import { unprocessable } from '../../lib/errors';
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
    encrypted_fields: encryptedFieldsSchema.optional(),
  })
  .strict()
  .openapi('ProjectSettings');

export type ProjectSettings = z.infer<typeof projectSettingsSchema>;

/**
 * Settings that were once accepted but that nothing reads. A client that sets one believes it
 * has an effect, so it is refused (422) with the reason instead of being stored and ignored.
 */
export const UNENFORCED_SETTINGS: Readonly<Record<string, string>> = {
  webhooks:
    'is not a project setting: webhooks have their own endpoints (POST /v1/projects/{project_id}/webhooks); nothing reads settings.webhooks',
  max_message_bytes:
    'is not enforced per project: the server-wide MAX_MESSAGE_BYTES limits every message body; nothing reads settings.max_message_bytes',
};

const refusedSetting = (name: string) =>
  z
    .unknown()
    .optional()
    .openapi({ deprecated: true, description: `Refused with 422: ${UNENFORCED_SETTINGS[name]}` });

/** What a request may send: the settings, plus the refused names, so they reach the 422 below instead of a generic 400. */
export const projectSettingsInputSchema = projectSettingsSchema
  .extend({ webhooks: refusedSetting('webhooks'), max_message_bytes: refusedSetting('max_message_bytes') })
  .openapi('ProjectSettingsInput');

/** Throws 422 naming every setting in `settings` that the service would store without enforcing. */
export function refuseUnenforcedSettings(settings: object | undefined): void {
  if (!settings) return;
  const refused = Object.keys(settings).filter((k) => k in UNENFORCED_SETTINGS);
  if (refused.length === 0) return;
  throw unprocessable(
    `Not saved: ${refused.map((k) => `settings.${k} ${UNENFORCED_SETTINGS[k]}`).join('; ')}.`,
    refused.map((k) => ({ path: `settings.${k}`, message: UNENFORCED_SETTINGS[k] })),
  );
}

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
  // Projects saved before a setting was refused may still hold it; it must not void the rest.
  const stored = raw && typeof raw === 'object' ? { ...(raw as Record<string, unknown>) } : {};
  for (const k of Object.keys(UNENFORCED_SETTINGS)) delete stored[k];
  const parsed = projectSettingsSchema.safeParse(stored);
  return parsed.success ? parsed.data : {};
}

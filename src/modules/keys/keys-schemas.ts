import { keyKindSchema } from '../../lib/key-kind';
import { z } from '../../lib/zod';

export const projectIdParams = z.object({ project_id: z.string().min(1).max(64) });
export const keyParams = projectIdParams.extend({ key_id: z.string().min(1).max(64) });

export const keySchema = z
  .object({
    id: z.string(),
    kind: keyKindSchema,
    name: z.string(),
    prefix: z.string().openapi({ description: 'The first characters of the key, to recognise it' }),
    created_at: z.string(),
    last_used_at: z.string().nullable(),
    revoked_at: z.string().nullable(),
  })
  .openapi('ApiKey');
export type KeyView = z.infer<typeof keySchema>;

export const createdKeySchema = keySchema
  .extend({ key: z.string().openapi({ description: 'The full key: shown this once, never again' }) })
  .openapi('ApiKeyCreated');

export const createKeySchema = z
  .object({ name: z.string().trim().max(100).default(''), kind: keyKindSchema })
  .strict()
  .openapi('ApiKeyCreate');

/** The public view of a key row (never its hash). */
export const keyView = (k: KeyView): KeyView => ({
  id: k.id,
  kind: k.kind,
  name: k.name,
  prefix: k.prefix,
  created_at: k.created_at,
  last_used_at: k.last_used_at,
  revoked_at: k.revoked_at,
});

import { z } from '../../lib/zod';
import { idSchema } from '../../lib/ids';

export const EXPORT_FORMAT = 'progressdb.export.v1';

const timestamp = z
  .string()
  .max(64)
  .refine(
    (s) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$/.test(s) && !Number.isNaN(Date.parse(s)),
    {
      message: 'must be an RFC 3339 timestamp, e.g. 2026-01-02T03:04:05.123456Z',
    },
  );
const seq = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const policy = z.enum(['public', 'members', 'owners']);

export const eventTypeSchema = z.enum([
  'thread.created',
  'thread.updated',
  'thread.deleted',
  'member.added',
  'member.removed',
  'message.created',
  'message.edited',
  'message.deleted',
  'reaction.added',
  'reaction.removed',
]);

/** First line: what this file is. */
export const headerLineSchema = z
  .object({
    kind: z.literal('export'),
    format: z.literal(EXPORT_FORMAT),
    project_id: z.string(),
    exported_at: timestamp,
  })
  .strict();

/** A thread's state as exported (the snapshot its events lead to), before its events. */
export const threadLineSchema = z
  .object({
    kind: z.literal('thread'),
    id: idSchema,
    type: z.enum(['dm', 'group', 'channel']),
    title: z.string().max(1000).nullable().default(null),
    attributes: z.record(z.string(), z.unknown()).default({}),
    policies: z.object({ read: policy, write: policy }).default({ read: 'members', write: 'members' }),
    created_by: z.string().max(128).nullable().default(null),
    created_at: timestamp,
    updated_at: timestamp.optional(),
    deleted_at: timestamp.nullable().default(null),
    last_seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    purged_through_seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    dm_key: z.string().max(1000).nullable().default(null),
    members: z
      .array(
        z.object({
          user_id: z.string().min(1).max(128),
          role: z.enum(['owner', 'admin', 'member']),
          added_at: timestamp,
        }),
      )
      .max(100_000)
      .default([]),
  })
  .strict();
export type ThreadLine = z.infer<typeof threadLineSchema>;

/** One event of the thread log, exactly as GET /v1/threads/{id}/events shows it. */
export const eventLineSchema = z
  .object({
    kind: z.literal('event'),
    thread_id: idSchema,
    seq,
    type: eventTypeSchema,
    message_id: z.string().min(1).max(128).nullable().default(null),
    actor: z.string().min(1).max(128).nullable().default(null),
    data: z.record(z.string(), z.unknown()),
    created_at: timestamp,
  })
  .strict();
export type EventLine = z.infer<typeof eventLineSchema>;

/** Last line: what the export contained (a file without it was cut short). */
export const endLineSchema = z
  .object({ kind: z.literal('end'), threads: z.number().int().min(0), events: z.number().int().min(0) })
  .strict();

export const exportLineSchema = z.discriminatedUnion('kind', [
  headerLineSchema,
  threadLineSchema,
  eventLineSchema,
  endLineSchema,
]);

export const exportQuerySchema = z
  .object({
    after_thread: idSchema.optional().openapi({
      description: 'Resume: start at this thread (its thread line again), with its events after after_seq',
    }),
    after_seq: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  })
  .strict()
  .refine((q) => q.after_seq === 0 || q.after_thread !== undefined, {
    message: 'after_seq needs after_thread',
    path: ['after_seq'],
  });

export const importResultSchema = z
  .object({
    threads: z.number().int(),
    events_imported: z.number().int(),
    events_skipped: z.number().int().openapi({ description: 'Already present (an earlier, interrupted import)' }),
    complete: z.boolean().openapi({ description: "The file's end line was read" }),
  })
  .openapi('ImportResult');
export type ImportResult = z.infer<typeof importResultSchema>;

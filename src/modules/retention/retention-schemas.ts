import { z } from '../../lib/zod';

export const retentionRunBodySchema = z
  .object({
    dry_run: z.boolean().default(false).openapi({ description: 'Say what would be removed, remove nothing' }),
  })
  .strict()
  .default({ dry_run: false });

export const threadPurgeSchema = z
  .object({
    thread_id: z.string(),
    reason: z.enum(['policy', 'on_demand', 'thread_purge']),
    from_seq: z.number().int(),
    through_seq: z.number().int().openapi({ description: "The thread's horizon after the run" }),
    events: z.number().int(),
    messages: z.number().int(),
  })
  .openapi('ThreadPurge');
export type ThreadPurge = z.infer<typeof threadPurgeSchema>;

export const retentionRunResultSchema = z
  .object({
    project_id: z.string(),
    dry_run: z.boolean(),
    policy: z.object({
      retention_days: z.number().int().nullable(),
      deleted_thread_retention_days: z.number().int().nullable(),
      max_messages_per_thread: z.number().int().nullable(),
    }),
    threads: z.array(threadPurgeSchema),
    totals: z.object({ threads: z.number().int(), events: z.number().int(), messages: z.number().int() }),
  })
  .openapi('RetentionRun');
export type RetentionRunResult = z.infer<typeof retentionRunResultSchema>;

export const auditQuerySchema = z
  .object({
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    before_id: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();

export const auditPageSchema = z
  .object({
    data: z.array(
      z.object({
        id: z.number().int(),
        thread_id: z.string(),
        from_seq: z.number().int(),
        through_seq: z.number().int(),
        events_removed: z.number().int(),
        messages_removed: z.number().int(),
        reason: z.enum(['policy', 'on_demand', 'thread_purge']),
        actor: z.string(),
        purged_at: z.string(),
      }),
    ),
    has_more: z.boolean(),
  })
  .openapi('RetentionAuditPage');

export const retentionTotalsSchema = z
  .object({
    purges: z.number().int(),
    threads: z.number().int().openapi({ description: 'Threads with a purged prefix' }),
    events: z.number().int(),
    messages: z.number().int(),
    last_purge_at: z.string().nullable(),
  })
  .openapi('RetentionTotals');

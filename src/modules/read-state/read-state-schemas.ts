import { pageQuery } from '../../lib/http/page-cursor';
import { z } from '../../lib/zod';

export const markReadSchema = z
  .object({
    seq: z
      .number()
      .int()
      .min(0)
      .max(Number.MAX_SAFE_INTEGER)
      .openapi({ description: 'The highest seq the user has seen' }),
  })
  .strict()
  .openapi('ReadMarkInput');

export const readMarkSchema = z
  .object({
    thread_id: z.string(),
    user_id: z.string(),
    last_read_seq: z.number().int().openapi({ description: 'The stored mark (it only moves forward)' }),
    unread: z.number().int(),
  })
  .openapi('ReadMark');
export type ReadMarkView = z.infer<typeof readMarkSchema>;

export const unreadListSchema = z
  .object({
    data: z.array(
      z.object({
        thread_id: z.string(),
        last_seq: z.number().int(),
        last_read_seq: z.number().int(),
        unread: z.number().int(),
      }),
    ),
    total: z.number().int().openapi({
      description:
        "Sum of unread over this page's threads (over all of them when next_cursor is null on the first page)",
    }),
    next_cursor: z
      .string()
      .nullable()
      .openapi({ description: 'Pass as ?cursor= for the next page; null on the last page' }),
  })
  .openapi('UnreadList');
export type UnreadListView = z.infer<typeof unreadListSchema>;

/** GET /v1/me/unread: 100 threads a page by default, at most 500. */
export const unreadQuerySchema = pageQuery(100, 500);

import { pageQuery } from '../../lib/http/page-cursor';
import { z } from '../../lib/zod';
import { idSchema, userIdSchema } from '../../lib/ids';

const jsonValue = z
  .unknown()
  .refine((v) => v !== undefined, 'is required (any JSON value)')
  .openapi({ description: 'Any JSON value' });

export const reactionSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[^\s/\\\p{Cc}]+$/u, 'must be 1–64 characters without spaces, slashes or control characters');

export const newMessageSchema = z
  .object({
    id: idSchema
      .optional()
      .openapi({ description: 'Client-chosen id; a retry with the same id returns the first result' }),
    body: jsonValue,
    author: userIdSchema.optional().openapi({ description: 'Secret keys only; defaults to X-User-ID' }),
    reply_to: idSchema.optional().openapi({
      description: 'Id of the message this one replies to: a message of the same thread (else 422). Set once, here.',
    }),
  })
  .strict()
  .openapi('NewMessage');
export type MessageInput = z.infer<typeof newMessageSchema>;

export const batchSchema = z
  .object({ messages: z.array(newMessageSchema).min(1).max(1000) })
  .strict()
  .openapi('MessageBatch');

export const editMessageSchema = z.object({ body: jsonValue }).strict().openapi('MessageEdit');

export const messageSchema = z
  .object({
    id: z.string(),
    thread_id: z.string(),
    author: z.string(),
    seq: z.number().int(),
    body: z.unknown(),
    version: z.number().int(),
    created_at: z.string(),
    edited_at: z.string().nullable(),
    deleted: z.boolean(),
    reactions: z.record(z.string(), z.number().int()),
    reply_to: z.string().nullable().openapi({ description: 'The message this one replies to (same thread), or null' }),
  })
  .openapi('Message');
export type MessageView = z.infer<typeof messageSchema>;

export const messageVersionSchema = z
  .object({
    version: z.number().int(),
    seq: z.number().int(),
    actor: z.string().nullable(),
    body: z.unknown(),
    deleted: z.boolean(),
    created_at: z.string(),
  })
  .openapi('MessageVersion');
export type MessageVersionView = z.infer<typeof messageVersionSchema>;

export const messageVersionListSchema = z
  .object({
    data: z.array(messageVersionSchema),
    next_cursor: z
      .string()
      .nullable()
      .openapi({ description: 'Pass as ?cursor= for the next page; null on the last page' }),
  })
  .openapi('MessageVersionList');
/** GET …/versions: oldest first, 50 a page by default, at most 200. */
export const versionsQuerySchema = pageQuery(50, 200);

const seqParam = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const boolParam = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

export const pageQuerySchema = z
  .object({
    limit: z.coerce.number().int().min(1).max(200).default(50),
    before_seq: seqParam.optional(),
    after_seq: seqParam.optional(),
    around_seq: seqParam.optional().openapi({
      description:
        'A page centred on this seq (it and newer take half the limit, older the rest; a short side gives its room to the other). ' +
        'Page on with before_seq = data[0].seq and after_seq = the last seq. Not with before_seq or after_seq.',
    }),
    include_deleted: boolParam.default(false),
    reply_to: idSchema.optional().openapi({ description: 'Only the replies to this message' }),
    author: userIdSchema.optional().openapi({ description: 'Only messages by this user' }),
  })
  .strict()
  .refine((q) => q.before_seq === undefined || q.after_seq === undefined, 'use before_seq or after_seq, not both')
  .refine(
    (q) => q.around_seq === undefined || (q.before_seq === undefined && q.after_seq === undefined),
    'around_seq is a page of its own: send it without before_seq and after_seq',
  );
export type PageQuery = z.infer<typeof pageQuerySchema>;

export const messagePageSchema = z
  .object({ data: z.array(messageSchema), has_more_before: z.boolean(), has_more_after: z.boolean() })
  .openapi('MessagePage');

export const messageParams = z.object({ thread_id: idSchema, message_id: idSchema });
export const reactionParams = messageParams.extend({ reaction: reactionSchema });

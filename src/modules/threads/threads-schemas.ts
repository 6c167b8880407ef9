import { pageQuery } from '../../lib/http/page-cursor';
import { z } from '../../lib/zod';
import { idSchema, userIdSchema } from '../../lib/ids';

export const threadTypeSchema = z.enum(['dm', 'group', 'channel']);
export const policySchema = z.enum(['public', 'members', 'owners']);
export const roleSchema = z.enum(['owner', 'admin', 'member']);
export type Role = z.infer<typeof roleSchema>;

const attributesSchema = z
  .record(z.string().max(128), z.unknown())
  .openapi({ description: 'Free JSON object, at most 16 KiB' })
  .refine((a) => Buffer.byteLength(JSON.stringify(a)) <= 16 * 1024, 'must be at most 16 KiB of JSON');
const policiesSchema = z.object({ read: policySchema.optional(), write: policySchema.optional() }).strict();
const memberInputSchema = z.union([
  userIdSchema,
  z.object({ user_id: userIdSchema, role: roleSchema.default('member') }).strict(),
]);

export const createThreadSchema = z
  .object({
    id: idSchema.optional(),
    type: threadTypeSchema,
    title: z.string().max(256).nullable().optional(),
    attributes: attributesSchema.optional(),
    members: z.array(memberInputSchema).max(1000).optional(),
    policies: policiesSchema.optional(),
  })
  .strict()
  .openapi('ThreadCreate');
export type CreateThreadInput = z.infer<typeof createThreadSchema>;

export const updateThreadSchema = z
  .object({
    title: z.string().max(256).nullable().optional(),
    attributes: attributesSchema.optional(),
    policies: policiesSchema.optional(),
  })
  .strict()
  .refine(
    (v) => v.title !== undefined || v.attributes !== undefined || v.policies !== undefined,
    'send at least one of title, attributes, policies',
  )
  .openapi('ThreadUpdate');
export type UpdateThreadInput = z.infer<typeof updateThreadSchema>;

export const threadSchema = z
  .object({
    id: z.string(),
    type: threadTypeSchema,
    title: z.string().nullable(),
    attributes: z.record(z.string(), z.unknown()),
    policies: z.object({ read: policySchema, write: policySchema }),
    created_by: z.string().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
    last_seq: z.number().int(),
    purged_through_seq: z.number().int().openapi({
      description: 'Retention horizon: events up to this seq were purged; the log starts at purged_through_seq + 1',
    }),
    last_activity_at: z.string(),
    deleted: z.boolean(),
    unread: z.number().int().optional().openapi({ description: 'Unread messages for the calling user (lists only)' }),
  })
  .openapi('Thread');
export type ThreadView = z.infer<typeof threadSchema>;

export const threadListSchema = z
  .object({ data: z.array(threadSchema), next_cursor: z.string().nullable() })
  .openapi('ThreadList');

export const threadListQuerySchema = z
  .object({
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(512).optional(),
    sort: z.enum(['last_activity', 'created']).default('last_activity').openapi({
      description: 'Newest first by latest activity (default) or by creation; a cursor keeps the sort it was made with',
    }),
  })
  .strict();

export const memberSchema = z.object({ user_id: z.string(), role: roleSchema, added_at: z.string() }).openapi('Member');
export const memberListSchema = z
  .object({
    data: z.array(memberSchema),
    next_cursor: z
      .string()
      .nullable()
      .openapi({ description: 'Pass as ?cursor= for the next page; null on the last page' }),
  })
  .openapi('MemberList');
/** GET /v1/threads/:id/members: by user id, 100 a page by default, at most 500. */
export const memberListQuerySchema = pageQuery(100, 500);
export const putMemberSchema = z
  .object({ role: roleSchema.default('member') })
  .strict()
  .openapi('MemberPut');

export const threadParams = z.object({ thread_id: idSchema });
export const memberParams = z.object({ thread_id: idSchema, user_id: userIdSchema });

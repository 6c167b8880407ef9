import { z } from '../../lib/zod';

export const eventSchema = z
  .object({
    seq: z.number().int(),
    type: z.string(),
    thread_id: z.string(),
    message_id: z.string().nullable(),
    actor: z.string().nullable(),
    data: z.record(z.string(), z.unknown()),
    created_at: z.string(),
  })
  .openapi('Event');
export type EventView = z.infer<typeof eventSchema>;

export const eventPageSchema = z.object({ data: z.array(eventSchema), has_more: z.boolean() }).openapi('EventPage');

export const eventsQuerySchema = z
  .object({
    after_seq: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();

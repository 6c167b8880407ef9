import { z } from '../../lib/zod';
import { idSchema } from '../../lib/ids';

const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const ref = z.string().max(64).optional().openapi({ description: 'Echoed in the reply, to match replies to requests' });

/** Messages a WebSocket client sends (see docs/REALTIME.md). */
export const wsClientMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('subscribe'), thread_id: idSchema, after_seq: seq.optional(), id: ref }).strict(),
  z.object({ type: z.literal('unsubscribe'), thread_id: idSchema, id: ref }).strict(),
  z
    .object({
      type: z.literal('typing'),
      thread_id: idSchema,
      state: z.enum(['start', 'stop']).default('start'),
      id: ref,
    })
    .strict(),
  z.object({ type: z.literal('read'), thread_id: idSchema, seq, id: ref }).strict(),
  z.object({ type: z.literal('ping'), id: ref }).strict(),
  // thread_id and message are validated by the send handler, so their errors come back as a
  // problem (the same field errors as REST), not as a malformed frame.
  z
    .object({ type: z.literal('send'), id: ref, thread_id: z.unknown(), message: z.unknown() })
    .strict()
    .openapi({ description: 'Append a message, as POST /v1/threads/{thread_id}/messages with `message` as its body' }),
]);
export type WsClientMessage = z.infer<typeof wsClientMessageSchema>;

export const tailQuerySchema = z
  .object({
    after_seq: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional().openapi({
      description:
        'Replay events after this seq first (Last-Event-ID wins when both are sent). Without either: live events only.',
    }),
    token: z.string().max(4096).optional().openapi({
      description: 'A realtime token (POST /v1/realtime/token) instead of key headers, for EventSource in browsers',
    }),
  })
  .strict();

export const realtimeTokenSchema = z
  .object({
    token: z.string().openapi({ description: 'Pass as ?token= to GET /v1/ws' }),
    expires_at: z.string(),
    expires_in: z.number().int().openapi({ description: 'Seconds' }),
  })
  .openapi('RealtimeToken');

export const realtimeTokenRequestSchema = z
  .object({
    expires_in: z.number().int().min(1).optional().openapi({
      description:
        'Seconds the token stays valid; at most REALTIME_TOKEN_MAX_TTL_SECONDS (default REALTIME_TOKEN_TTL_SECONDS)',
    }),
  })
  .strict()
  .optional()
  .openapi('RealtimeTokenRequest');

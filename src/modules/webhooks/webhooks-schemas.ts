import { z } from '../../lib/zod';
import { idSchema } from '../../lib/ids';

export const WEBHOOK_EVENT_TYPES = [
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
] as const;

const eventTypeSchema = z.enum(WEBHOOK_EVENT_TYPES);

export const endpointUrlSchema = z
  .string()
  .trim()
  .min(1)
  .max(2048)
  .openapi({ description: 'https:// URL (http:// only where the operator allows it); no credentials, no fragment' });

export const createEndpointSchema = z
  .object({
    url: endpointUrlSchema,
    description: z.string().trim().max(500).default(''),
    event_types: z
      .array(eventTypeSchema)
      .min(1)
      .max(WEBHOOK_EVENT_TYPES.length)
      .nullable()
      .default(null)
      .openapi({ description: 'Only these event types; null or absent: every type' }),
    thread_ids: z
      .array(idSchema)
      .min(1)
      .max(100)
      .nullable()
      .default(null)
      .openapi({ description: 'Only events of these threads; null or absent: every thread' }),
  })
  .strict()
  .openapi('WebhookEndpointCreate');
export type CreateEndpointInput = z.infer<typeof createEndpointSchema>;

export const updateEndpointSchema = z
  .object({
    url: endpointUrlSchema.optional(),
    description: z.string().trim().max(500).optional(),
    event_types: z.array(eventTypeSchema).min(1).max(WEBHOOK_EVENT_TYPES.length).nullable().optional(),
    thread_ids: z.array(idSchema).min(1).max(100).nullable().optional(),
    enabled: z.boolean().optional().openapi({ description: 'false disables the endpoint; true re-enables it' }),
  })
  .strict()
  .refine((v) => Object.keys(v).length > 0, 'send at least one field to change')
  .openapi('WebhookEndpointUpdate');
export type UpdateEndpointInput = z.infer<typeof updateEndpointSchema>;

export const endpointSchema = z
  .object({
    id: z.string(),
    url: z.string(),
    description: z.string(),
    event_types: z.array(z.string()).nullable(),
    thread_ids: z.array(z.string()).nullable(),
    enabled: z.boolean(),
    disabled_reason: z.string().nullable(),
    previous_secret_expires_at: z
      .string()
      .nullable()
      .openapi({ description: 'Until then, deliveries also carry a signature made with the previous secret' }),
    created_at: z.string(),
    updated_at: z.string(),
    health: z
      .object({
        pending: z.number().int(),
        dead: z.number().int(),
        delivered_last_hour: z.number().int(),
        failing_last_hour: z.number().int().openapi({ description: 'Deliveries whose last attempt failed' }),
        avg_duration_ms_last_hour: z.number().nullable(),
        max_duration_ms_last_hour: z.number().nullable(),
        oldest_pending_at: z.string().nullable(),
      })
      .optional(),
  })
  .openapi('WebhookEndpoint');
export type EndpointView = z.infer<typeof endpointSchema>;

export const endpointWithSecretSchema = endpointSchema
  .extend({ secret: z.string().openapi({ description: 'whsec_… signing secret: shown in this response only' }) })
  .openapi('WebhookEndpointWithSecret');

export const rotateSecretSchema = z
  .object({
    grace_seconds: z
      .number()
      .int()
      .min(0)
      .max(7 * 86_400)
      .optional()
      .openapi({ description: 'How long the previous secret keeps signing too (default: the server setting)' }),
  })
  .strict()
  .openapi('WebhookSecretRotate');

export const deliveryStatusSchema = z.enum(['pending', 'delivered', 'dead']);

export const deliverySchema = z
  .object({
    id: z.string().openapi({ description: 'Also the webhook-id header: the same on every attempt' }),
    endpoint_id: z.string(),
    thread_id: z.string(),
    seq: z.number().int(),
    event_type: z.string(),
    status: deliveryStatusSchema,
    attempts: z.number().int(),
    next_attempt_at: z.string().nullable(),
    last_attempt_at: z.string().nullable(),
    last_status_code: z.number().int().nullable(),
    last_error: z.string().nullable(),
    last_duration_ms: z.number().int().nullable(),
    delivered_at: z.string().nullable(),
    dead_at: z.string().nullable(),
    created_at: z.string(),
  })
  .openapi('WebhookDelivery');
export type DeliveryView = z.infer<typeof deliverySchema>;

export const deliveryListSchema = z
  .object({ data: z.array(deliverySchema), next_cursor: z.string().nullable() })
  .openapi('WebhookDeliveryList');

export const deliveryListQuerySchema = z
  .object({
    status: deliveryStatusSchema.optional(),
    endpoint_id: z.string().min(1).max(64).optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).optional(),
  })
  .strict();
export type DeliveryListQuery = z.infer<typeof deliveryListQuerySchema>;

export const bulkReplaySchema = z
  .object({
    endpoint_id: z.string().min(1).max(64).optional().openapi({ description: 'Only dead letters of this endpoint' }),
  })
  .strict()
  .openapi('WebhookBulkReplay');

export const bulkReplayResultSchema = z.object({ replayed: z.number().int() }).openapi('WebhookBulkReplayResult');

export const endpointParams = z.object({
  project_id: z.string().min(1).max(64),
  endpoint_id: z.string().min(1).max(64),
});
export const projectParams = z.object({ project_id: z.string().min(1).max(64) });
export const deliveryParams = z.object({ delivery_id: z.string().min(1).max(64) });

import { z } from '../../lib/zod';
import { idSchema } from '../../lib/ids';
import { problemSchema } from '../../lib/http/problem';
import { eventSchema } from '../events/events-schemas';
import { messageSchema, newMessageSchema } from '../messages/messages-schemas';
import { wsClientMessageSchema } from './realtime-schemas';

/**
 * The realtime protocol as an AsyncAPI 3.1 document (GET /asyncapi.json): the frames of GET
 * /v1/ws (both directions) and the events of the SSE tail, their payloads generated from zod
 * schemas like the OpenAPI document. Server frames are declared here: the gateway builds them
 * inline (and pre-serialises events), so these schemas are the contract it is tested against.
 */

const seq = z.number().int().min(0);
const ref = z.string().max(64).optional().describe('The id of the request this answers, when it had one');
const reasonSchema = z.string().describe('Why: unsubscribed, revoked, deleted, shutdown, slow_consumer, …');

/** The client `send` frame: an append over the socket, acknowledged after commit. */
export const wsSendFrameSchema = z
  .object({
    type: z.literal('send'),
    id: z.string().min(1).max(64).optional().describe('Client request id; the ack or error repeats it'),
    thread_id: idSchema,
    message: newMessageSchema,
  })
  .strict();

export const serverFrames = {
  welcome: z.object({
    type: z.literal('welcome'),
    connection_id: z.string(),
    user_id: z.string().nullable(),
    heartbeat_ms: z.number().int().describe('Send ping at least this often; silence for longer closes with 4000'),
  }),
  subscribed: z.object({
    type: z.literal('subscribed'),
    id: ref,
    thread_id: z.string(),
    after_seq: seq.describe('Events after this seq follow, then ready'),
    last_seq: seq,
    presence: z.array(z.string()).describe('Users online in the thread'),
  }),
  event: z.object({ type: z.literal('event'), thread_id: z.string(), event: eventSchema }),
  ready: z.object({
    type: z.literal('ready'),
    thread_id: z.string(),
    seq: seq.describe('Replay is complete up to this seq; live events follow'),
    recovered: z.literal(false).optional().describe('Present when events were purged by retention (see reset)'),
    purged_through_seq: seq.optional(),
  }),
  reset: z.object({
    type: z.literal('reset'),
    thread_id: z.string(),
    recovered: z.literal(false),
    purged_through_seq: seq.describe('Events up to here were removed by retention: reload the state, then resume'),
  }),
  unsubscribed: z.object({ type: z.literal('unsubscribed'), id: ref, thread_id: z.string(), reason: reasonSchema }),
  pong: z.object({ type: z.literal('pong'), id: ref }),
  typing: z.object({
    type: z.literal('typing'),
    thread_id: z.string(),
    user_id: z.string(),
    state: z.enum(['start', 'stop']),
  }),
  presence: z.object({
    type: z.literal('presence'),
    thread_id: z.string(),
    user_id: z.string(),
    state: z.enum(['online', 'offline']),
  }),
  read: z.object({ type: z.literal('read'), thread_id: z.string(), user_id: z.string(), seq }),
  'read.ok': z.object({
    type: z.literal('read.ok'),
    id: ref,
    thread_id: z.string(),
    last_read_seq: seq,
    unread: z.number().int(),
  }),
  ack: z.object({
    type: z.literal('ack'),
    id: z.string(),
    seq: seq,
    message: messageSchema,
  }),
  error: z.object({
    type: z.literal('error'),
    id: ref,
    thread_id: z.string().optional(),
    code: z.string().optional().describe('The error kind (bad_request, forbidden, not_found, unavailable, …)'),
    message: z.string().optional(),
    problem: problemSchema.optional().describe('For send: the problem+json the REST append would have answered'),
  }),
};

const sseEvents = {
  'sse.event': z.object({}).passthrough().describe('No `event:` name; `id:` is the seq, `data:` an Event'),
  'sse.ready': z.object({ seq, recovered: z.literal(false).optional(), purged_through_seq: seq.optional() }),
  'sse.reset': z.object({ recovered: z.literal(false), purged_through_seq: seq, after_seq: seq }),
  'sse.reconnect': z.object({ reason: reasonSchema }),
  'sse.closed': z.object({ reason: reasonSchema }),
};

/** A zod schema as the JSON Schema (draft-07) AsyncAPI payloads take. */
function payload(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...json } = z.toJSONSchema(schema, {
    target: 'draft-7',
    io: 'input',
    unrepresentable: 'any',
  });
  return json;
}

/**
 * The client frames: the gateway's own schemas, except `send`, documented with the types its
 * handler validates (the gateway's frame schema leaves thread_id and message to the handler, so
 * that their errors come back as a problem rather than as a malformed frame).
 */
function clientFrames(): Record<string, z.ZodType> {
  const out: Record<string, z.ZodType> = {};
  for (const o of wsClientMessageSchema.options) out[(o.shape.type as z.ZodLiteral<string>).value] = o;
  out.send = wsSendFrameSchema;
  return out;
}

const SSE_EXAMPLE_NAMES: Record<string, string> = {
  'sse.event': '(none)',
  'sse.ready': 'ready',
  'sse.reset': 'reset',
  'sse.reconnect': 'reconnect',
  'sse.closed': 'closed',
};

export function buildAsyncApiDocument(serverUrl?: string) {
  const url = new URL(serverUrl ?? 'http://localhost:8080');
  const secure = url.protocol === 'https:';
  const client = clientFrames();
  const messages: Record<string, unknown> = {};
  const msgRef = (name: string) => ({ $ref: `#/components/messages/${name}` });
  for (const [name, schema] of Object.entries(client))
    messages[`client.${name}`] = { name, title: `client → server: ${name}`, payload: payload(schema) };
  for (const [name, schema] of Object.entries(serverFrames))
    messages[`server.${name}`] = { name, title: `server → client: ${name}`, payload: payload(schema) };
  for (const [name, schema] of Object.entries(sseEvents))
    messages[name] = {
      name,
      title: `SSE event: ${SSE_EXAMPLE_NAMES[name]}`,
      contentType: 'application/json',
      payload: name === 'sse.event' ? payload(eventSchema) : payload(schema),
      description: schema.description,
    };

  const wsMessages = Object.fromEntries(
    [...Object.keys(client).map((n) => `client.${n}`), ...Object.keys(serverFrames).map((n) => `server.${n}`)].map(
      (n) => [n, msgRef(n)],
    ),
  );
  const sseMessages = Object.fromEntries(Object.keys(sseEvents).map((n) => [n, msgRef(n)]));
  const onWs = (names: string[]) => names.map((n) => ({ $ref: `#/channels/ws/messages/${n}` }));
  const onSse = (names: string[]) => names.map((n) => ({ $ref: `#/channels/tail/messages/${n}` }));

  const operations: Record<string, unknown> = {
    sendClientFrame: {
      action: 'send',
      channel: { $ref: '#/channels/ws' },
      summary: 'Frames a client sends: subscribe, unsubscribe, typing, read, ping, send',
      messages: onWs(Object.keys(client).map((n) => `client.${n}`)),
    },
    receiveServerFrame: {
      action: 'receive',
      channel: { $ref: '#/channels/ws' },
      summary: 'Frames the server sends',
      messages: onWs(Object.keys(serverFrames).map((n) => `server.${n}`)),
    },
    sendMessage: {
      action: 'send',
      channel: { $ref: '#/channels/ws' },
      summary: 'Append a message over the socket (same validation, authorization, idempotency and limits as REST)',
      description: 'Acknowledged only after commit: ack (with the stored message) or error (with the problem).',
      messages: onWs(['client.send']),
      reply: { channel: { $ref: '#/channels/ws' }, messages: onWs(['server.ack', 'server.error']) },
    },
    receiveTail: {
      action: 'receive',
      channel: { $ref: '#/channels/tail' },
      summary: 'The SSE tail: replayed and live events, then ready, reset, reconnect and closed',
      messages: onSse(Object.keys(sseEvents)),
    },
  };

  return {
    asyncapi: '3.1.0',
    info: {
      title: 'ProgressDB realtime',
      version: '1.0.0',
      description:
        'The WebSocket (GET /v1/ws) and Server-Sent Events (GET /v1/threads/{thread_id}/tail) protocols. REST is in /openapi.json.',
    },
    defaultContentType: 'application/json',
    servers: {
      ws: {
        host: url.host,
        protocol: secure ? 'wss' : 'ws',
        description: 'WebSocket',
        security: [{ $ref: '#/components/securitySchemes/apiKey' }, { $ref: '#/components/securitySchemes/token' }],
      },
      http: {
        host: url.host,
        protocol: secure ? 'https' : 'http',
        description: 'Server-Sent Events',
        security: [{ $ref: '#/components/securitySchemes/apiKey' }, { $ref: '#/components/securitySchemes/token' }],
      },
    },
    channels: {
      ws: {
        address: '/v1/ws',
        title: 'WebSocket',
        servers: [{ $ref: '#/servers/ws' }],
        description:
          'JSON text frames, each an object with a `type`. Requests may carry an `id` that replies repeat. ' +
          'Close codes: 1012 service restart (reconnect, resume with after_seq), 4000 heartbeat timeout, ' +
          '4008 slow consumer (reconnect and resume), 1008 policy (credentials revoked).',
        messages: wsMessages,
        bindings: {
          ws: {
            method: 'GET',
            query: {
              type: 'object',
              properties: { token: { type: 'string', description: 'A realtime token (POST /v1/realtime/token)' } },
            },
            headers: {
              type: 'object',
              properties: {
                Authorization: { type: 'string', description: 'Bearer sk_… or pk_…' },
                'X-API-Key': { type: 'string' },
                'X-User-ID': { type: 'string' },
                'X-User-Signature': { type: 'string' },
              },
            },
          },
        },
      },
      tail: {
        address: '/v1/threads/{thread_id}/tail',
        title: 'SSE tail',
        servers: [{ $ref: '#/servers/http' }],
        description:
          'text/event-stream. Resume with Last-Event-ID (or ?after_seq=); heartbeat comments keep the connection alive.',
        parameters: { thread_id: { description: 'The thread to tail' } },
        messages: sseMessages,
      },
    },
    operations,
    components: {
      messages,
      securitySchemes: {
        apiKey: { type: 'httpApiKey', name: 'Authorization', in: 'header', description: 'Bearer sk_ or pk_ key' },
        token: { type: 'httpApiKey', name: 'token', in: 'query', description: 'A realtime token' },
      },
    },
  };
}

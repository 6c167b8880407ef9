import { Router } from 'express';
import { z } from '../../lib/zod';
import { badRequest } from '../../lib/errors';
import type { ApiPrincipal, RouteFactory } from '../../lib/http/route';
import type { Idempotency, WorkItemWrapper } from '../idempotency/idempotency';
import type { AppendOutcome } from './message-append';
import {
  batchSchema,
  editMessageSchema,
  messagePageSchema,
  messageParams,
  messageSchema,
  messageVersionListSchema,
  newMessageSchema,
  pageQuerySchema,
  reactionParams,
  versionsQuerySchema,
  type MessageView,
} from './messages-schemas';
import type { MessagesService } from './messages-service';
import { threadParams } from '../threads/threads-schemas';

const replayedHeader = (r: AppendOutcome): Record<string, string> =>
  r.existed.every(Boolean) ? { 'Idempotent-Replayed': 'true' } : {};

/** One line per message for `Accept: text/plain`: "#seq author: text". */
function asText(messages: MessageView[]): string {
  return messages
    .map((m) => {
      const b = m.body as { text?: unknown } | null;
      const text = m.deleted
        ? '[deleted]'
        : b && typeof b === 'object' && typeof b.text === 'string'
          ? b.text
          : JSON.stringify(m.body);
      return `#${m.seq} ${m.author}: ${text.replace(/[\r\n]+/g, ' ')}`;
    })
    .join('\n')
    .concat(messages.length ? '\n' : '');
}

/** If-Match: the message versions a change applies to ("3", W/"3", 3, a list), or * for any. */
function parseIfMatch(value: string | undefined): number[] | '*' | undefined {
  if (value === undefined) return undefined;
  if (value.trim() === '*') return '*';
  const versions = value.split(',').map((s) => /^(?:W\/)?"?(\d{1,15})"?$/.exec(s.trim()));
  if (versions.some((v) => !v))
    throw badRequest('If-Match takes the message version (its ETag), e.g. If-Match: "3", or *.');
  return versions.map((v) => Number(v![1]));
}

/** Documented request headers of PATCH and DELETE on a message. */
const revisionHeaders = z.object({
  'idempotency-key': z
    .string()
    .optional()
    .openapi({ description: 'A retry with the same key answers what the first request answered.' }),
  'if-match': z
    .string()
    .optional()
    .openapi({ description: 'The message version (ETag) this change applies to; 412 when it is at another version.' }),
});

const prefersText = (accept: string | undefined) =>
  !!accept && /text\/plain/.test(accept) && !/application\/json/.test(accept);

export function createMessagesRouter(deps: {
  idempotency: Idempotency;
  routes: RouteFactory;
  messages: MessagesService;
  onAppended?: (projectId: string, newMessages: number) => void;
}) {
  const { routes, messages } = deps;
  // Usage counting: only messages this request actually wrote (not retries of existing ids).
  const counted =
    (projectId: string) =>
    <T>(r: T): T => {
      if (r && typeof r === 'object' && 'existed' in r && Array.isArray(r.existed))
        deps.onAppended?.(projectId, r.existed.filter((e) => !e).length);
      return r;
    };
  const router = Router();
  const tags = ['Messages'];

  /** An edit or delete: Idempotency-Key through idempotency.reply, If-Match checked in the write. */
  const revision = (
    principal: ApiPrincipal,
    params: { thread_id: string; message_id: string },
    header: (name: string) => string | undefined,
    method: 'PATCH' | 'DELETE',
    body: Record<string, unknown>,
    write: (
      wrap: WorkItemWrapper<MessageView> | undefined,
      ifMatch: number[] | '*' | undefined,
    ) => Promise<MessageView>,
  ) => {
    const ifMatchHeader = header('if-match');
    const ifMatch = parseIfMatch(ifMatchHeader);
    return deps.idempotency
      .reply<MessageView>(
        {
          ...principal,
          method,
          header: header('idempotency-key'),
          route: `/v1/threads/${params.thread_id}/messages/${params.message_id}`,
          body: { ...body, if_match: ifMatchHeader ?? null },
        },
        (m) => ({ status: 200, body: m, headers: { etag: `"${m.version}"` } }),
        (wrap) => write(wrap, ifMatch),
      )
      .then((r) => messages.openReply(principal, params.thread_id, r));
  };

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/threads/:thread_id/messages',
      operationId: 'appendMessage',
      idempotent: true,
      summary: 'Append a message (creates the thread if the id is new)',
      description:
        'A text/plain body becomes {"text": …}. A client-chosen id or an Idempotency-Key makes retries return the first result.',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: threadParams,
      body: newMessageSchema,
      textBody: (text) => ({ body: { text } }),
      responses: { 201: { description: 'Appended (acknowledged after commit)', schema: messageSchema } },
    },
    ({ principal, params, body, header }) =>
      deps.idempotency
        .reply<AppendOutcome>(
          { ...principal, header: header('idempotency-key'), route: `/v1/threads/${params.thread_id}/messages`, body },
          (r) => ({ status: 201, body: r.messages[0], headers: replayedHeader(r) }),
          (wrap) => messages.append(principal, params.thread_id, [body], { wrap }).then(counted(principal.projectId)),
        )
        .then((r) => messages.openReply(principal, params.thread_id, r)),
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/threads/:thread_id/messages/batch',
      operationId: 'appendMessages',
      idempotent: true,
      summary: 'Append up to 1,000 messages in one transaction with contiguous seqs',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: threadParams,
      body: batchSchema,
      responses: { 201: { description: 'Appended', schema: z.object({ data: z.array(messageSchema) }) } },
    },
    ({ principal, params, body, header }) =>
      deps.idempotency
        .reply<AppendOutcome>(
          {
            ...principal,
            header: header('idempotency-key'),
            route: `/v1/threads/${params.thread_id}/messages/batch`,
            body,
          },
          (r) => ({ status: 201, body: { data: r.messages }, headers: replayedHeader(r) }),
          (wrap) =>
            messages.append(principal, params.thread_id, body.messages, { wrap }).then(counted(principal.projectId)),
        )
        .then((r) => messages.openReply(principal, params.thread_id, r)),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id/messages',
      operationId: 'listMessages',
      summary: 'A page of messages in ascending seq order (the newest page without a cursor)',
      description: '`Accept: text/plain` returns one line per message.',
      tags,
      auth: 'api',
      rateClass: 'read',
      params: threadParams,
      query: pageQuerySchema,
      responses: { 200: { description: 'A page', schema: messagePageSchema } },
    },
    async ({ principal, params, query, header }) => {
      if (prefersText(header('accept')))
        return { text: asText((await messages.page(principal, params.thread_id, query)).data) };
      const { json, page } = await messages.pageJson(principal, params.thread_id, query);
      return { json, body: page };
    },
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id/messages/:message_id',
      operationId: 'getMessage',
      summary: 'Read one message (current version)',
      tags,
      auth: 'api',
      rateClass: 'read',
      params: messageParams,
      responses: { 200: { description: 'The message', schema: messageSchema } },
    },
    async ({ principal, params }) => ({ body: await messages.get(principal, params.thread_id, params.message_id) }),
  );

  routes.route(
    router,
    {
      method: 'patch',
      path: '/v1/threads/:thread_id/messages/:message_id',
      operationId: 'editMessage',
      errors: [409, 412],
      summary: 'Edit a message (appends a new version)',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: messageParams,
      body: editMessageSchema,
      headers: revisionHeaders,
      textBody: (text) => ({ body: { text } }),
      responses: {
        200: { description: 'The edited message (ETag: its version)', schema: messageSchema },
      },
    },
    ({ principal, params, body, header }) =>
      revision(principal, params, header, 'PATCH', { body: body.body }, (wrap, ifMatch) =>
        messages.edit(principal, params.thread_id, params.message_id, body.body, { wrap, ifMatch }),
      ),
  );

  routes.route(
    router,
    {
      method: 'delete',
      path: '/v1/threads/:thread_id/messages/:message_id',
      operationId: 'deleteMessage',
      errors: [409, 412],
      summary: 'Soft-delete a message (appends a tombstone version; history is kept)',
      tags,
      auth: 'api',
      rateClass: 'write',
      params: messageParams,
      headers: revisionHeaders,
      responses: {
        200: { description: 'The tombstoned message (ETag: its version)', schema: messageSchema },
      },
    },
    ({ principal, params, header }) =>
      revision(principal, params, header, 'DELETE', {}, (wrap, ifMatch) =>
        messages.remove(principal, params.thread_id, params.message_id, { wrap, ifMatch }),
      ),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/threads/:thread_id/messages/:message_id/versions',
      operationId: 'listMessageVersions',
      summary: 'The versions of a message, oldest first, a page at a time',
      description: 'By version; `limit` 50 by default, at most 200; page on with `cursor` = next_cursor.',
      tags,
      auth: 'api',
      rateClass: 'read',
      params: messageParams,
      query: versionsQuerySchema,
      responses: { 200: { description: 'A page of versions', schema: messageVersionListSchema } },
    },
    async ({ principal, params, query }) => ({
      body: await messages.versions(principal, params.thread_id, params.message_id, query),
    }),
  );

  for (const on of [true, false]) {
    routes.route(
      router,
      {
        method: on ? 'put' : 'delete',
        path: '/v1/threads/:thread_id/messages/:message_id/reactions/:reaction',
        operationId: on ? 'addReaction' : 'removeReaction',
        summary: on ? "Add the user's reaction (idempotent)" : "Remove the user's reaction (idempotent)",
        tags,
        auth: 'api',
        rateClass: 'write',
        params: reactionParams,
        responses: { 200: { description: 'The message with its reaction summary', schema: messageSchema } },
      },
      async ({ principal, params }) => ({
        body: await messages.react(principal, params.thread_id, params.message_id, params.reaction, on),
      }),
    );
  }

  return router;
}

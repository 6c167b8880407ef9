import { Router } from 'express';
import type { RouteFactory } from '../../lib/http/route';
import { z } from '../../lib/zod';
import type { ProjectsService } from '../projects/projects-service';
import {
  bulkReplayResultSchema,
  bulkReplaySchema,
  createEndpointSchema,
  deliveryListQuerySchema,
  deliveryListSchema,
  deliveryParams,
  deliverySchema,
  endpointParams,
  endpointSchema,
  endpointWithSecretSchema,
  projectParams,
  rotateSecretSchema,
  updateEndpointSchema,
} from './webhooks-schemas';
import type { WebhooksService } from './webhooks-service';

const noStore = { 'Cache-Control': 'no-store' };

/**
 * Webhook endpoints in the management API (developer session, the developer's own project) and
 * the project admin routes for deliveries and dead letters (ak_ keys, the key's project).
 */
export function createWebhooksRouter(deps: {
  routes: RouteFactory;
  webhooks: WebhooksService;
  projects: Pick<ProjectsService, 'getOwned'>;
}) {
  const { routes, webhooks } = deps;
  const router = Router();
  const tags = ['Webhooks'];
  const owned = async (developerId: string, projectId: string) =>
    (await deps.projects.getOwned(developerId, projectId)).id;

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/projects/:project_id/webhooks',
      operationId: 'createWebhook',
      errors: [422],
      summary: 'Register a webhook endpoint (its whsec_ secret is in this response only)',
      tags,
      auth: 'developer',
      params: projectParams,
      body: createEndpointSchema,
      responses: { 201: { description: 'Created', schema: endpointWithSecretSchema } },
    },
    async ({ principal, params, body }) => {
      const projectId = await owned(principal.developerId, params.project_id);
      return { status: 201, body: await webhooks.create(projectId, body), headers: noStore };
    },
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/webhooks',
      operationId: 'listWebhooks',
      summary: "A project's webhook endpoints with their delivery health",
      tags,
      auth: 'developer',
      params: projectParams,
      responses: {
        200: {
          description: 'Endpoints',
          schema: z.object({ data: z.array(endpointSchema) }).openapi('WebhookEndpointList'),
        },
      },
    },
    async ({ principal, params }) => ({
      body: { data: await webhooks.list(await owned(principal.developerId, params.project_id)) },
    }),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/webhooks/:endpoint_id',
      operationId: 'getWebhook',
      summary: 'A webhook endpoint',
      tags,
      auth: 'developer',
      params: endpointParams,
      responses: { 200: { description: 'The endpoint', schema: endpointSchema } },
    },
    async ({ principal, params }) => ({
      body: await webhooks.get(await owned(principal.developerId, params.project_id), params.endpoint_id),
    }),
  );

  routes.route(
    router,
    {
      method: 'patch',
      path: '/v1/projects/:project_id/webhooks/:endpoint_id',
      operationId: 'updateWebhook',
      errors: [422],
      summary: 'Change, disable or re-enable a webhook endpoint',
      tags,
      auth: 'developer',
      params: endpointParams,
      body: updateEndpointSchema,
      responses: { 200: { description: 'The updated endpoint', schema: endpointSchema } },
    },
    async ({ principal, params, body }) => ({
      body: await webhooks.update(await owned(principal.developerId, params.project_id), params.endpoint_id, body),
    }),
  );

  routes.route(
    router,
    {
      method: 'delete',
      path: '/v1/projects/:project_id/webhooks/:endpoint_id',
      operationId: 'deleteWebhook',
      summary: 'Delete a webhook endpoint and its deliveries',
      tags,
      auth: 'developer',
      params: endpointParams,
      responses: { 204: { description: 'Deleted' } },
    },
    async ({ principal, params }) => {
      await webhooks.remove(await owned(principal.developerId, params.project_id), params.endpoint_id);
      return { status: 204 };
    },
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/projects/:project_id/webhooks/:endpoint_id/secret/rotate',
      operationId: 'rotateWebhookSecret',
      summary: 'Rotate the signing secret; both secrets sign during the grace period',
      tags,
      auth: 'developer',
      params: endpointParams,
      body: rotateSecretSchema.optional(),
      responses: {
        200: { description: 'The endpoint with its new secret (shown once)', schema: endpointWithSecretSchema },
      },
    },
    async ({ principal, params, body }) => ({
      body: await webhooks.rotateSecret(
        await owned(principal.developerId, params.project_id),
        params.endpoint_id,
        body?.grace_seconds,
      ),
      headers: noStore,
    }),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/webhook-deliveries',
      operationId: 'listWebhookDeliveries',
      summary: 'Recent deliveries, newest first (console)',
      tags,
      auth: 'developer',
      params: projectParams,
      query: deliveryListQuerySchema,
      responses: { 200: { description: 'A page of deliveries', schema: deliveryListSchema } },
    },
    async ({ principal, params, query }) => ({
      body: await webhooks.deliveries(await owned(principal.developerId, params.project_id), query),
    }),
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/projects/:project_id/webhook-deliveries/:delivery_id/replay',
      operationId: 'replayWebhookDelivery',
      summary: 'Replay a dead letter (console)',
      tags,
      auth: 'developer',
      params: projectParams.merge(deliveryParams),
      responses: { 200: { description: 'The delivery, pending again', schema: deliverySchema } },
    },
    async ({ principal, params }) => ({
      body: await webhooks.replay(await owned(principal.developerId, params.project_id), params.delivery_id),
    }),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/webhooks/deliveries',
      operationId: 'adminListWebhookDeliveries',
      summary: "The project's webhook deliveries, newest first (?status=dead: dead letters)",
      tags: ['Admin'],
      auth: 'admin',
      rateClass: 'read',
      query: deliveryListQuerySchema,
      responses: { 200: { description: 'A page of deliveries', schema: deliveryListSchema } },
    },
    async ({ principal, query }) => ({ body: await webhooks.deliveries(principal.projectId, query) }),
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/webhooks/deliveries/replay',
      operationId: 'adminReplayDeadLetters',
      summary: 'Replay every dead letter (optionally of one endpoint)',
      tags: ['Admin'],
      auth: 'admin',
      rateClass: 'write',
      body: bulkReplaySchema.optional(),
      responses: { 200: { description: 'How many were replayed', schema: bulkReplayResultSchema } },
    },
    async ({ principal, body }) => ({
      body: { replayed: await webhooks.replayAll(principal.projectId, body?.endpoint_id) },
    }),
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/webhooks/deliveries/:delivery_id/replay',
      operationId: 'adminReplayWebhookDelivery',
      summary: 'Replay one dead letter (same webhook-id, fresh attempt budget)',
      tags: ['Admin'],
      auth: 'admin',
      rateClass: 'write',
      params: deliveryParams,
      responses: { 200: { description: 'The delivery, pending again', schema: deliverySchema } },
    },
    async ({ principal, params }) => ({ body: await webhooks.replay(principal.projectId, params.delivery_id) }),
  );

  return router;
}

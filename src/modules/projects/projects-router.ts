import { Router } from 'express';
import { z } from '../../lib/zod';
import type { RouteFactory } from '../../lib/http/route';
import { developerSchema, type DevelopersService } from '../developers/developers-service';
import type { UsageCounter } from '../usage/usage-counter';
import { projectIdParams } from '../keys/keys-schemas';
import {
  projectSettingsInputSchema,
  projectSettingsSchema,
  readSettings,
  refuseUnenforcedSettings,
} from './project-settings';
import type { ProjectsService } from './projects-service';
import type { ProjectRow } from './projects-store';

const projectSummarySchema = z
  .object({
    id: z.string(),
    name: z.string(),
    settings: projectSettingsSchema,
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi('ProjectSummary');
const projectSchema = projectSummarySchema
  .extend({
    signing_secret: z
      .string()
      .openapi({ description: 'HMAC-SHA256 key for X-User-Signature; keep it on your backend' }),
    previous_signing_secret_expires_at: z
      .string()
      .nullable()
      .openapi({ description: 'Until then, signatures made with the previous secret still verify' }),
  })
  .openapi('Project');

const nameSchema = z.string().trim().min(1, 'must not be empty').max(100);
const createProjectSchema = z
  .object({ name: nameSchema, settings: projectSettingsInputSchema.optional() })
  .strict()
  .openapi('ProjectCreate');
const updateProjectSchema = z
  .object({
    name: nameSchema.optional(),
    settings: projectSettingsInputSchema
      .optional()
      .openapi({ description: 'Top-level fields given replace the stored ones; fields not given are kept' }),
  })
  .strict()
  .openapi('ProjectUpdate');

const usageSchema = z
  .object({ data: z.array(z.object({ hour: z.string(), requests: z.number().int(), messages: z.number().int() })) })
  .openapi('ProjectUsage');

const summary = (p: ProjectRow) => ({
  id: p.id,
  name: p.name,
  settings: p.settings ?? {},
  created_at: p.created_at,
  updated_at: p.updated_at,
});
const full = (p: ProjectRow) => ({
  ...summary(p),
  signing_secret: p.signing_secret,
  previous_signing_secret_expires_at: p.previous_signing_secret_expires_at,
});
const noStore = { 'Cache-Control': 'no-store' };

/**
 * The management API behind the console (session auth): the developer's own projects, their
 * keys, signing secret, settings and usage. Another developer's project is a 404.
 */
export function createProjectsRouter(deps: {
  routes: RouteFactory;
  projects: ProjectsService;
  developers: Pick<DevelopersService, 'get'>;
  usage: Pick<UsageCounter, 'series'>;
  /** After a change to keys, signing secret or settings: local caches, then the other replicas. */
  keysChanged: (projectId: string) => Promise<void>;
}) {
  const { routes, projects } = deps;
  const router = Router();
  const tags = ['Console'];

  const { keysChanged } = deps;

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/me',
      operationId: 'getDeveloper',
      summary: 'The signed-in developer',
      tags,
      auth: 'developer',
      responses: { 200: { description: 'The developer', schema: developerSchema } },
    },
    async ({ principal }) => {
      const me = await deps.developers.get(principal.developerId);
      return { body: me };
    },
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/projects',
      operationId: 'createProject',
      summary: 'Create a project',
      description: 'The project starts without keys; create them with POST /v1/projects/{project_id}/keys.',
      tags,
      auth: 'developer',
      body: createProjectSchema,
      responses: { 201: { description: 'Created', schema: projectSchema } },
    },
    async ({ principal, body }) => {
      const row = await projects.createOwnedProject({
        name: body.name,
        ownerId: principal.developerId,
        settings: body.settings,
      });
      return { status: 201, body: full(row), headers: noStore };
    },
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects',
      operationId: 'listProjects',
      summary: "The developer's projects, newest first",
      tags,
      auth: 'developer',
      responses: {
        200: {
          description: 'Projects',
          schema: z.object({ data: z.array(projectSummarySchema) }).openapi('ProjectList'),
        },
      },
    },
    async ({ principal }) => ({ body: { data: (await projects.listOwned(principal.developerId)).map(summary) } }),
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id',
      operationId: 'getProject',
      summary: 'A project with its settings and signing secret',
      tags,
      auth: 'developer',
      params: projectIdParams,
      responses: { 200: { description: 'The project', schema: projectSchema } },
    },
    async ({ principal, params }) => ({
      body: full(await projects.getOwned(principal.developerId, params.project_id)),
      headers: noStore,
    }),
  );

  routes.route(
    router,
    {
      method: 'patch',
      path: '/v1/projects/:project_id',
      operationId: 'updateProject',
      summary: 'Rename a project or change its settings',
      tags,
      auth: 'developer',
      params: projectIdParams,
      body: updateProjectSchema,
      responses: { 200: { description: 'The updated project', schema: projectSchema } },
    },
    async ({ principal, params, body }) => {
      const current = await projects.getOwned(principal.developerId, params.project_id);
      let settings: Record<string, unknown> | undefined;
      if (body.settings) {
        refuseUnenforcedSettings(body.settings);
        // Stored settings that no longer validate were already being ignored (readSettings).
        settings = projectSettingsSchema.parse({ ...readSettings(current.settings), ...body.settings });
      }
      const row = await projects.updateProject(current.id, { name: body.name, settings });
      if (settings) await keysChanged(current.id);
      return { body: full(row), headers: noStore };
    },
  );

  routes.route(
    router,
    {
      method: 'delete',
      path: '/v1/projects/:project_id',
      operationId: 'deleteProject',
      summary: 'Delete a project (its keys stop working at once)',
      tags,
      auth: 'developer',
      params: projectIdParams,
      responses: { 204: { description: 'Deleted' } },
    },
    async ({ principal, params }) => {
      const current = await projects.getOwned(principal.developerId, params.project_id);
      await projects.deleteProject(current.id);
      await keysChanged(current.id);
      return { status: 204 };
    },
  );

  routes.route(
    router,
    {
      method: 'post',
      path: '/v1/projects/:project_id/signing-secret/rotate',
      operationId: 'rotateSigningSecret',
      summary: 'Rotate the signing secret; the previous one keeps verifying for a grace period',
      tags,
      auth: 'developer',
      params: projectIdParams,
      responses: { 200: { description: 'The project with its new signing secret', schema: projectSchema } },
    },
    async ({ principal, params }) => {
      const project = await projects.getOwned(principal.developerId, params.project_id);
      const row = await projects.rotateSigningSecret(project.id);
      await keysChanged(project.id);
      return { body: full(row), headers: noStore };
    },
  );

  routes.route(
    router,
    {
      method: 'get',
      path: '/v1/projects/:project_id/usage',
      operationId: 'getProjectUsage',
      summary: 'Requests and new messages per hour',
      tags,
      auth: 'developer',
      params: projectIdParams,
      query: z
        .object({
          hours: z.coerce
            .number()
            .int()
            .min(1)
            .max(24 * 31)
            .default(24),
        })
        .strict(),
      responses: { 200: { description: 'Hourly usage, oldest first', schema: usageSchema } },
    },
    async ({ principal, params, query }) => {
      const project = await projects.getOwned(principal.developerId, params.project_id);
      return { body: { data: await deps.usage.series(project.id, query.hours) } };
    },
  );

  return router;
}

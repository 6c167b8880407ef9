import { Router } from 'express';
import type { RouteFactory } from '../../lib/http/route';
import {
  auditPageSchema,
  auditQuerySchema,
  retentionRunBodySchema,
  retentionRunResultSchema,
} from './retention-schemas';
import type { RetentionService } from './retention-service';

/** On-demand retention and its audit trail (admin keys, the key's own project). */
export function createRetentionRouter(deps: { routes: RouteFactory; service: RetentionService }) {
  const router = Router();
  const tags = ['Retention'];
  deps.routes.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/retention/run',
      operationId: 'runRetention',
      summary: "Apply the project's retention policy now",
      description:
        'Removes, in bounded audited batches, the prefix of each thread that the policy no longer keeps, and returns what was removed. ' +
        'With `dry_run: true` nothing is removed and the answer says what would be.',
      tags,
      auth: 'admin',
      rateClass: 'write',
      body: retentionRunBodySchema,
      responses: { 200: { description: 'What was (or would be) removed', schema: retentionRunResultSchema } },
    },
    async ({ principal, body }) => ({
      body: await deps.service.runProject(principal.projectId, {
        dryRun: body.dry_run,
        reason: 'on_demand',
        actor: `admin_key:${principal.keyId}`,
      }),
    }),
  );
  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/retention/audit',
      operationId: 'listRetentionAudit',
      summary: 'Purge audit rows, newest first',
      tags,
      auth: 'admin',
      rateClass: 'read',
      query: auditQuerySchema,
      responses: { 200: { description: 'Audit rows', schema: auditPageSchema } },
    },
    async ({ principal, query }) => {
      const rows = await deps.service.audit(principal.projectId, query.limit + 1, query.before_id);
      return { body: { data: rows.slice(0, query.limit), has_more: rows.length > query.limit } };
    },
  );
  return router;
}

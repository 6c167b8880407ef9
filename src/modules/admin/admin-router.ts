import { Router } from 'express';
import type { Knex } from 'knex';
import type { RouteFactory } from '../../lib/http/route';
import { z } from '../../lib/zod';
import { retentionTotalsSchema } from '../retention/retention-schemas';

const statsSchema = z
  .object({
    project_id: z.string(),
    threads: z.object({ live: z.number().int(), deleted: z.number().int() }),
    messages: z.object({ total: z.number().int(), deleted: z.number().int() }),
    events: z.number().int(),
    members: z.number().int(),
    keys: z.object({ live: z.number().int(), revoked: z.number().int() }),
    last_activity_at: z.string().nullable(),
    purged: retentionTotalsSchema.openapi({ description: 'What retention removed (audit totals)' }),
  })
  .openapi('ProjectStats');

/** Project admin routes (ak_ keys): counts and usage of the key's own project. */
export function createAdminRouter(deps: {
  db: Knex;
  routes: RouteFactory;
  retentionTotals: (projectId: string) => Promise<z.infer<typeof retentionTotalsSchema>>;
}) {
  const router = Router();
  deps.routes.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/stats',
      operationId: 'getProjectStats',
      summary: 'Counts and usage of the project',
      tags: ['Admin'],
      auth: 'admin',
      rateClass: 'read',
      responses: { 200: { description: 'Project statistics', schema: statsSchema } },
    },
    async ({ principal }) => {
      const p = principal.projectId;
      const { rows } = await deps.db.raw(
        `select
           (select count(*) from threads where project_id = :p and deleted_at is null) as threads_live,
           (select count(*) from threads where project_id = :p and deleted_at is not null) as threads_deleted,
           (select count(*) from messages where project_id = :p) as messages_total,
           (select count(*) from messages where project_id = :p and deleted) as messages_deleted,
           (select coalesce(sum(last_seq - purged_through_seq), 0) from threads where project_id = :p) as events,
           (select count(*) from thread_members where project_id = :p) as members,
           (select count(*) from api_keys where project_id = :p and revoked_at is null) as keys_live,
           (select count(*) from api_keys where project_id = :p and revoked_at is not null) as keys_revoked,
           (select max(last_activity_at) from threads where project_id = :p) as last_activity_at`,
        { p },
      );
      const r = rows[0];
      return {
        body: {
          project_id: p,
          threads: { live: Number(r.threads_live), deleted: Number(r.threads_deleted) },
          messages: { total: Number(r.messages_total), deleted: Number(r.messages_deleted) },
          events: Number(r.events),
          members: Number(r.members),
          keys: { live: Number(r.keys_live), revoked: Number(r.keys_revoked) },
          last_activity_at: r.last_activity_at ?? null,
          purged: await deps.retentionTotals(p),
        },
      };
    },
  );
  return router;
}

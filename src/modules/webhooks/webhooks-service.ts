import type { Knex } from 'knex';
import { badRequest, notFound } from '../../lib/errors';
import { newId } from '../../lib/ids';
import type { CommitPointers } from '../thread-log/thread-log';
import { assertSafeEndpoint, type TargetPolicy } from './safe-target';
import { newWebhookSecret, type SecretBox } from './webhook-secrets';
import type {
  CreateEndpointInput,
  DeliveryListQuery,
  DeliveryView,
  EndpointView,
  UpdateEndpointInput,
} from './webhooks-schemas';
import type { EndpointHealth, EndpointRow, WebhooksStore } from './webhooks-store';

const view = (row: EndpointRow, health?: EndpointHealth): EndpointView => ({
  id: row.id,
  url: row.url,
  description: row.description,
  event_types: row.event_types,
  thread_ids: row.thread_ids,
  enabled: row.enabled,
  disabled_reason: row.disabled_reason,
  previous_secret_expires_at:
    row.previous_secret_expires_at && Date.parse(row.previous_secret_expires_at) > Date.now()
      ? row.previous_secret_expires_at
      : null,
  created_at: row.created_at,
  updated_at: row.updated_at,
  ...(health ? { health } : {}),
});

const EMPTY_HEALTH: EndpointHealth = {
  pending: 0,
  dead: 0,
  delivered_last_hour: 0,
  failing_last_hour: 0,
  avg_duration_ms_last_hour: null,
  max_duration_ms_last_hour: null,
  oldest_pending_at: null,
};

const MAX_ENDPOINTS = 20;

/**
 * Webhook endpoints and their deliveries, always inside one project (the caller's: a developer's
 * owned project or an admin key's). Secrets are generated here, shown once, stored sealed.
 */
export function createWebhooksService(deps: {
  db: Knex;
  store: WebhooksStore;
  box: () => Promise<SecretBox>;
  policy: TargetPolicy;
  secretGraceSeconds: number;
  /** Users with a live connection to the thread on any replica (realtime presence). */
  online: (projectId: string, threadId: string) => string[];
}) {
  const { db, store } = deps;

  async function endpoint(projectId: string, id: string): Promise<EndpointRow> {
    const row = await store.getEndpoint(db, projectId, id);
    if (!row) throw notFound('webhook endpoint');
    return row;
  }

  return {
    async create(projectId: string, input: CreateEndpointInput): Promise<EndpointView & { secret: string }> {
      await assertSafeEndpoint(input.url, deps.policy);
      const id = newId('we');
      const secret = newWebhookSecret();
      const box = await deps.box();
      const row = await db.transaction(async (tx) => {
        // Serialises creations per project so the cap holds under concurrency.
        await tx.raw('select 1 from projects where id = ? for update', [projectId]);
        const existing = await store.listEndpoints(tx, projectId);
        if (existing.length >= MAX_ENDPOINTS)
          throw badRequest(`A project has at most ${MAX_ENDPOINTS} webhook endpoints; delete one first.`);
        return store.insertEndpoint(tx, {
          project_id: projectId,
          id,
          url: input.url,
          description: input.description,
          event_types: input.event_types,
          thread_ids: input.thread_ids,
          secret_ciphertext: box.seal(projectId, id, secret),
        });
      });
      return { ...view(row, EMPTY_HEALTH), secret };
    },

    async list(projectId: string): Promise<EndpointView[]> {
      const [rows, health] = await Promise.all([store.listEndpoints(db, projectId), store.health(db, projectId)]);
      return rows.map((r) => view(r, health.get(r.id) ?? EMPTY_HEALTH));
    },

    async get(projectId: string, id: string): Promise<EndpointView> {
      const row = await endpoint(projectId, id);
      const health = await store.health(db, projectId);
      return view(row, health.get(id) ?? EMPTY_HEALTH);
    },

    async update(projectId: string, id: string, input: UpdateEndpointInput): Promise<EndpointView> {
      await endpoint(projectId, id);
      if (input.url !== undefined) await assertSafeEndpoint(input.url, deps.policy);
      const row = await store.updateEndpoint(db, projectId, id, {
        url: input.url,
        description: input.description,
        event_types: input.event_types,
        thread_ids: input.thread_ids,
        ...(input.enabled === undefined
          ? {}
          : { enabled: input.enabled, disabled_reason: input.enabled ? null : 'Disabled by a developer' }),
      });
      if (!row) throw notFound('webhook endpoint');
      return view(row);
    },

    async remove(projectId: string, id: string): Promise<void> {
      if (!(await store.deleteEndpoint(db, projectId, id))) throw notFound('webhook endpoint');
    },

    /** A new secret (shown once); the previous one keeps signing too for the grace period. */
    async rotateSecret(
      projectId: string,
      id: string,
      graceSeconds = deps.secretGraceSeconds,
    ): Promise<EndpointView & { secret: string }> {
      const current = await endpoint(projectId, id);
      const secret = newWebhookSecret();
      const row = await store.updateEndpoint(db, projectId, id, {
        secret_ciphertext: (await deps.box()).seal(projectId, id, secret),
        previous_secret_ciphertext: graceSeconds > 0 ? current.secret_ciphertext : null,
        previous_secret_expires_at: graceSeconds > 0 ? new Date(Date.now() + graceSeconds * 1000).toISOString() : null,
      });
      if (!row) throw notFound('webhook endpoint');
      return { ...view(row), secret };
    },

    async disable(projectId: string, id: string, reason: string): Promise<void> {
      await store.updateEndpoint(db, projectId, id, { enabled: false, disabled_reason: reason });
    },

    async deliveries(projectId: string, q: DeliveryListQuery) {
      const page = await store.listDeliveries(db, projectId, q);
      if (page === 'bad_cursor') throw badRequest('cursor is not a cursor this API returned.');
      return page;
    },

    /** Replays one dead letter: due now, with a fresh attempt budget, same webhook-id. */
    async replay(projectId: string, deliveryId: string): Promise<DeliveryView> {
      const existing = await store.getDelivery(db, projectId, deliveryId);
      if (!existing) throw notFound('webhook delivery');
      if (existing.status !== 'dead')
        throw badRequest(`Only dead deliveries can be replayed (this one is ${existing.status}).`);
      await store.replay(db, projectId, { id: deliveryId });
      return (await store.getDelivery(db, projectId, deliveryId))!;
    },

    async replayAll(projectId: string, endpointId?: string): Promise<number> {
      if (endpointId) await endpoint(projectId, endpointId);
      return store.replay(db, projectId, { endpointId });
    },

    /** The ingest hook: the group's outbox rows, in its transaction, with one statement. */
    async writeOutbox(tx: Knex.Transaction, committed: CommitPointers): Promise<void> {
      if (committed.latest.size === 0) return;
      const ranges = [...committed.latest.values()].map((p) => ({
        p: p.projectId,
        t: p.threadId,
        f: p.first,
        l: p.seq,
        o: deps.online(p.projectId, p.threadId),
      }));
      await store.writeOutbox(tx, ranges);
    },

    /** writeOutbox folded into an append statement, for these threads' events (see `StatementFold`). */
    outboxFold(threads: Array<{ projectId: string; threadId: string }>) {
      return deps.store.outboxFold(
        threads.map((t) => ({ p: t.projectId, t: t.threadId, o: deps.online(t.projectId, t.threadId) })),
      );
    },
  };
}

export type WebhooksService = ReturnType<typeof createWebhooksService>;

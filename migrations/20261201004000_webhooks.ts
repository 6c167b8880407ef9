import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- A project's webhook endpoints. The signing secret is stored encrypted (AES-256-GCM under
    -- a server key), never in plaintext: HMAC signing needs the raw secret, so it cannot be hashed.
    create table webhook_endpoints (
      project_id text not null references projects (id) on delete cascade,
      id text not null,
      url text not null,
      description text not null default '',
      event_types text[],                       -- null: every event type
      thread_ids text[],                        -- null: every thread
      enabled boolean not null default true,
      disabled_reason text,
      secret_ciphertext text not null,
      previous_secret_ciphertext text,
      previous_secret_expires_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (project_id, id)
    );

    -- The outbox: one row per (endpoint, committed event), written in the ingest group's
    -- transaction. Mutable delivery state; delivered rows are swept after a retention period.
    create table webhook_deliveries (
      project_id text not null,
      id text not null,                          -- also the webhook-id header (stable across retries)
      endpoint_id text not null,
      thread_id text not null,
      seq bigint not null,
      event_type text not null,
      online_user_ids text[],                    -- message.created: members live on any replica at commit
      status text not null default 'pending' check (status in ('pending', 'delivered', 'dead')),
      attempts int not null default 0,
      next_attempt_at timestamptz not null default now(),
      claimed_until timestamptz,
      claim_token text,
      last_attempt_at timestamptz,
      last_status_code int,
      last_error text,
      last_duration_ms int,
      delivered_at timestamptz,
      dead_at timestamptz,
      created_at timestamptz not null default now(),
      primary key (project_id, id),
      unique (project_id, endpoint_id, thread_id, seq),
      foreign key (project_id, endpoint_id) references webhook_endpoints (project_id, id) on delete cascade
    );
    -- Workers scan due work in time order; only pending rows are indexed.
    create index webhook_deliveries_due on webhook_deliveries (next_attempt_at) where status = 'pending';
    -- "Is there an earlier pending event of this (endpoint, thread)?" — the per-thread order check.
    create index webhook_deliveries_pending_order on webhook_deliveries (project_id, endpoint_id, thread_id, seq)
      where status = 'pending';
    -- Console and admin listings, newest first.
    create index webhook_deliveries_recent on webhook_deliveries (project_id, created_at desc, id desc);
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table webhook_deliveries; drop table webhook_endpoints;');
}

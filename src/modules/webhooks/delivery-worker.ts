import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import type { EventView } from '../events/events-schemas';
import type { TargetPolicy } from './safe-target';
import { checkEndpointUrl, postTo, resolveTarget, TargetRefused } from './safe-target';
import { signPayload, type SecretBox } from './webhook-secrets';
import type { ClaimedDelivery, WebhooksStore } from './webhooks-store';

export interface DeliveryOptions {
  concurrency: number;
  pollMs: number;
  timeoutMs: number;
  claimSeconds: number;
  /** Seconds to wait before retry n (n = 1 …); after the last, the delivery is dead. */
  retrySchedule: number[];
  jitter: number;
  maxResponseBytes: number;
  deliveredRetentionSeconds: number;
  policy: TargetPolicy;
}

export type Outcome = 'delivered' | 'failed' | 'dead' | 'disabled';

export interface DeliveryObserver {
  attempt(outcome: Outcome, seconds: number): void;
}

/** Retry-After as seconds (delta-seconds or an HTTP date), or undefined. Capped at one day. */
export function retryAfterSeconds(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  let seconds: number;
  if (/^\d+$/.test(trimmed)) seconds = Number(trimmed);
  else {
    const at = Date.parse(trimmed);
    if (Number.isNaN(at)) return undefined;
    seconds = Math.max(0, (at - now) / 1000);
  }
  return Math.min(seconds, 86_400);
}

/** The delay before retry `attempt` (1-based), ± jitter; undefined when the schedule is spent. */
export function retryDelay(
  schedule: number[],
  attempt: number,
  jitter: number,
  random = Math.random,
): number | undefined {
  const base = schedule[attempt - 1];
  if (base === undefined) return undefined;
  return base * (1 + jitter * (2 * random() - 1));
}

/** Opens an event's sealed body values as /events shows them (the encryption module's openEvents). */
export type OpenEvents = (
  projectId: string,
  threadId: string,
  events: EventView[],
  mode: 'lenient',
) => Promise<EventView[]>;

/** The claimed delivery's event as stored (body values of encrypting projects still sealed). */
export function storedEventOf(d: ClaimedDelivery): EventView {
  return {
    seq: Number(d.seq),
    type: d.event_type,
    thread_id: d.thread_id,
    message_id: d.message_id,
    actor: d.actor,
    data: d.data ?? {},
    created_at: d.event_created_at ?? '',
  };
}

/**
 * The Standard Webhooks body: {type, timestamp, data}, data being the event as /events shows it —
 * `event` is the delivery's event already opened (decrypted) when its project encrypts.
 */
export function payloadOf(d: ClaimedDelivery, event: EventView = storedEventOf(d)): string {
  return JSON.stringify({
    type: d.event_type,
    timestamp: d.event_created_at,
    data: {
      project_id: d.project_id,
      thread_id: d.thread_id,
      seq: d.seq,
      type: d.event_type,
      message_id: event.message_id,
      actor: event.actor,
      data: event.data,
      created_at: d.event_created_at,
      ...(d.offline_member_ids ? { offline_member_ids: d.offline_member_ids } : {}),
    },
  });
}

/**
 * The delivery worker of one replica. It claims due deliveries (FOR UPDATE SKIP LOCKED, with a
 * claim that expires, so a replica that dies mid-delivery only delays them), sends each with a
 * bounded number in flight, and records the outcome. Per (endpoint, thread) only the oldest
 * pending event is ever claimable, which is what keeps seq order.
 */
export function createDeliveryWorker(deps: {
  db: Knex;
  store: WebhooksStore;
  box: () => Promise<SecretBox>;
  logger: Logger;
  options: DeliveryOptions;
  observer: DeliveryObserver;
  disableEndpoint: (projectId: string, endpointId: string, reason: string) => Promise<void>;
  /** Absent: bodies are sent as stored (no project encrypts). */
  openEvents?: OpenEvents;
}) {
  const { db, store, logger, options } = deps;
  const token = randomUUID();
  const inflight = new Map<string, AbortController>();
  let running = false;
  let again = false;
  let closed = false;
  let started = false;
  let poller: NodeJS.Timeout | null = null;
  let sweeper: NodeJS.Timeout | null = null;

  async function tick() {
    if (closed) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        const room = options.concurrency - inflight.size;
        if (room <= 0) break;
        const claimed = await store.claim(db, { limit: room, claimSeconds: options.claimSeconds, token });
        for (const d of claimed) {
          const abort = new AbortController();
          inflight.set(d.id, abort);
          void deliver(d, abort.signal).finally(() => {
            inflight.delete(d.id);
            void tick();
          });
        }
        if (claimed.length === room) again = true;
      } while (again && !closed);
    } catch (err) {
      if (!closed) logger.warn({ err: (err as Error).message }, 'webhook claim failed; retrying at the next poll');
    } finally {
      running = false;
    }
  }

  async function signatures(d: ClaimedDelivery, timestamp: number, body: string): Promise<string> {
    const box = await deps.box();
    const secrets = [box.open(d.project_id, d.endpoint_id, d.secret_ciphertext)];
    if (
      d.previous_secret_ciphertext &&
      d.previous_secret_expires_at &&
      Date.parse(d.previous_secret_expires_at) > Date.now()
    )
      secrets.push(box.open(d.project_id, d.endpoint_id, d.previous_secret_ciphertext));
    return secrets.map((s) => signPayload(s, d.id, timestamp, body)).join(' ');
  }

  async function deliver(d: ClaimedDelivery, signal: AbortSignal) {
    const started = performance.now();
    let statusCode: number | null = null;
    let error: string | null = null;
    let retryAfter: number | undefined;
    if (d.event_created_at === null) {
      // Nothing left to send; a pending row would otherwise hold its thread back forever.
      await settle(d, 'dead', started, {
        statusCode: null,
        error: 'the event was purged by retention before delivery',
      });
      return;
    }
    try {
      // Opened like /events opens it, lenient like the live tails: a shredded thread's values show
      // the erased marker, a tampered one the unreadable marker (a retry could not fix either). A KMS
      // that is down throws: the attempt fails and is retried on schedule, nothing is sent sealed.
      const stored = storedEventOf(d);
      const [event] = deps.openEvents
        ? await deps.openEvents(d.project_id, d.thread_id, [stored], 'lenient')
        : [stored];
      const body = payloadOf(d, event);
      const timestamp = Math.floor(Date.now() / 1000);
      const url = checkEndpointUrl(d.url, options.policy);
      // Resolved and checked now, and the connection goes to exactly this address.
      const target = await resolveTarget(url, options.policy);
      const res = await postTo(url, target.address, {
        headers: {
          'webhook-id': d.id,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': await signatures(d, timestamp, body),
        },
        body,
        timeoutMs: options.timeoutMs,
        maxResponseBytes: options.maxResponseBytes,
        signal,
      });
      statusCode = res.status;
      if (res.status >= 200 && res.status < 300) {
        await settle(d, 'delivered', started, { statusCode, error: null });
        return;
      }
      if (res.status === 410) {
        await deps.disableEndpoint(d.project_id, d.endpoint_id, 'The endpoint answered 410 Gone');
        // The event stays pending, first in line, for when the endpoint is enabled again.
        await settle(d, 'disabled', started, { statusCode, error: 'HTTP 410 Gone: endpoint disabled', retryIn: 0 });
        return;
      }
      error = `HTTP ${res.status}${res.body ? `: ${res.body.slice(0, 200)}` : ''}`;
      retryAfter = retryAfterSeconds(res.retryAfter);
    } catch (e) {
      if (signal.aborted) return; // shutting down: the claim is released, the attempt does not count
      error = e instanceof TargetRefused ? `target refused: ${e.message}` : `${(e as Error).message}`.slice(0, 300);
    }
    const delay = retryDelay(options.retrySchedule, d.attempts, options.jitter);
    if (delay === undefined) await settle(d, 'dead', started, { statusCode, error });
    else await settle(d, 'failed', started, { statusCode, error, retryIn: retryAfter ?? delay });
  }

  async function settle(
    d: ClaimedDelivery,
    outcome: Outcome,
    started: number,
    r: { statusCode: number | null; error: string | null; retryIn?: number },
  ) {
    const durationMs = performance.now() - started;
    deps.observer.attempt(outcome, durationMs / 1000);
    const status = outcome === 'delivered' ? 'delivered' : outcome === 'dead' ? 'dead' : 'pending';
    try {
      await store.settle(db, d, {
        status,
        retryInSeconds: r.retryIn,
        statusCode: r.statusCode,
        error: r.error,
        durationMs,
      });
    } catch (err) {
      // The claim expires and the delivery is retried: at least once, never lost.
      logger.warn({ err: (err as Error).message, delivery: d.id }, 'could not record a webhook attempt');
    }
  }

  async function sweep() {
    try {
      await store.sweepDelivered(db, options.deliveredRetentionSeconds);
    } catch (err) {
      logger.debug({ err: (err as Error).message }, 'webhook sweep failed');
    }
  }

  return {
    /** New work may be due (a local commit, another replica's NOTIFY). */
    kick: () => {
      if (started) void tick();
    },
    start() {
      started = true;
      poller = setInterval(() => void tick(), options.pollMs);
      poller.unref();
      sweeper = setInterval(() => void sweep(), 10 * 60_000);
      sweeper.unref();
      void tick();
    },
    /** Stops claiming, aborts what is in flight and gives those claims back. */
    async close() {
      closed = true;
      if (poller) clearInterval(poller);
      if (sweeper) clearInterval(sweeper);
      for (const a of inflight.values()) a.abort();
      while (running) await new Promise((r) => setTimeout(r, 10));
      try {
        await store.release(db, token);
      } catch (err) {
        logger.debug({ err: (err as Error).message }, 'could not release webhook claims; they expire');
      }
    },
    get inflight() {
      return inflight.size;
    },
  };
}

export type DeliveryWorker = ReturnType<typeof createDeliveryWorker>;

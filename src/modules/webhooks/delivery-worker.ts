import { randomUUID, type KeyObject } from 'node:crypto';
import type { Knex } from 'knex';
import type { Logger } from '../../lib/logger';
import type { EventView } from '../events/events-schemas';
import type { TargetPolicy } from './safe-target';
import { checkEndpointUrl, postTo, resolveTarget, TargetRefused } from './safe-target';
import { signingKey, signPayload, type SecretBox } from './webhook-secrets';
import type { ClaimedDelivery, SettleOutcome, WebhooksStore } from './webhooks-store';

export interface DeliveryOptions {
  concurrency: number;
  pollMs: number;
  /**
   * At least this long between two claim queries of this replica: under load every wake-up
   * (local commit, NOTIFY, finished attempt) coalesces into one claim of many deliveries instead
   * of one query per event, leaving the CPU to ingest; idle, it is the added latency at most.
   */
  claimIntervalMs: number;
  timeoutMs: number;
  claimSeconds: number;
  /** Seconds to wait before retry n (n = 1 …); after the last, the delivery is dead. */
  retrySchedule: number[];
  jitter: number;
  maxResponseBytes: number;
  deliveredRetentionSeconds: number;
  policy: TargetPolicy;
}

const SECRET_CACHE_MS = 60_000;
const SECRET_CACHE_SIZE = 1_000;

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
  let timer: NodeJS.Timeout | null = null;
  let lastClaimAt = -Infinity;

  /** Claims at the next allowed moment (one pending wake-up at a time: wake-ups coalesce). */
  function schedule() {
    if (closed || !started || timer) return;
    const wait = Math.max(0, lastClaimAt + options.claimIntervalMs - performance.now());
    timer = setTimeout(() => {
      timer = null;
      void tick();
    }, wait);
  }

  async function tick() {
    if (closed) return;
    if (running) {
      again = true; // claimed once the running claim is done
      return;
    }
    const room = options.concurrency - inflight.size;
    if (room <= 0) return; // a finished attempt wakes the worker again
    running = true;
    lastClaimAt = performance.now();
    try {
      const claimed = await store.claim(db, { limit: room, claimSeconds: options.claimSeconds, token });
      for (const d of claimed) {
        const abort = new AbortController();
        inflight.set(d.id, abort);
        void deliver(d, abort.signal).finally(() => {
          inflight.delete(d.id);
          schedule();
        });
      }
      // A full claim: more is probably due right away (after the interval).
      if (claimed.length === room) schedule();
    } catch (err) {
      if (!closed) logger.warn({ err: (err as Error).message }, 'webhook claim failed; retrying at the next poll');
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  // Outcomes are written in batches: whatever finished while the previous UPDATE ran goes in the
  // next one (one statement for many deliveries under load, no added wait when idle).
  const settling: Array<{ outcome: SettleOutcome; done: () => void }> = [];
  let flushing = false;
  async function flushSettles() {
    if (flushing) return;
    flushing = true;
    try {
      while (settling.length > 0) {
        const batch = settling.splice(0, 500);
        try {
          await store.settleMany(
            db,
            batch.map((b) => b.outcome),
          );
        } catch (err) {
          // The claims expire and those deliveries are retried: at least once, never lost.
          logger.warn(
            { err: (err as Error).message, deliveries: batch.map((b) => b.outcome.id) },
            'could not record webhook attempts',
          );
        }
        for (const b of batch) b.done();
      }
    } finally {
      flushing = false;
    }
  }

  // Opened secrets as HMAC keys, by endpoint and ciphertext: not one AES-GCM open and base64
  // decode per delivery. A rotation changes the ciphertext (a new entry); entries expire soon anyway.
  const keys = new Map<string, { key: KeyObject; until: number }>();
  async function keyOf(d: ClaimedDelivery, sealed: string): Promise<KeyObject> {
    const id = `${d.project_id}\u0000${d.endpoint_id}\u0000${sealed}`;
    const now = Date.now();
    const hit = keys.get(id);
    if (hit && hit.until > now) return hit.key;
    const key = signingKey((await deps.box()).open(d.project_id, d.endpoint_id, sealed));
    if (keys.size >= SECRET_CACHE_SIZE) keys.clear();
    keys.set(id, { key, until: now + SECRET_CACHE_MS });
    return key;
  }

  async function signatures(d: ClaimedDelivery, timestamp: number, body: string): Promise<string> {
    const secrets = [await keyOf(d, d.secret_ciphertext)];
    if (
      d.previous_secret_ciphertext &&
      d.previous_secret_expires_at &&
      Date.parse(d.previous_secret_expires_at) > Date.now()
    )
      secrets.push(await keyOf(d, d.previous_secret_ciphertext));
    return secrets.map((s) => signPayload(s, d.id, timestamp, body)).join(' ');
  }

  // Endpoint URLs parsed and checked once (the policy is this worker's, fixed); DNS is still
  // resolved and checked at every send.
  const urls = new Map<string, URL>();
  function urlOf(raw: string): URL {
    let url = urls.get(raw);
    if (!url) {
      url = checkEndpointUrl(raw, options.policy);
      if (urls.size >= SECRET_CACHE_SIZE) urls.clear();
      urls.set(raw, url);
    }
    return url;
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
      const url = urlOf(d.url);
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
    await new Promise<void>((done) => {
      settling.push({
        outcome: {
          project_id: d.project_id,
          id: d.id,
          claim_token: d.claim_token,
          status,
          retryInSeconds: r.retryIn,
          statusCode: r.statusCode,
          error: r.error,
          durationMs,
        },
        done,
      });
      void flushSettles();
    });
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
    kick: () => schedule(),
    start() {
      started = true;
      poller = setInterval(() => schedule(), options.pollMs);
      poller.unref();
      sweeper = setInterval(() => void sweep(), 10 * 60_000);
      sweeper.unref();
      schedule();
    },
    /** Stops claiming, aborts what is in flight and gives those claims back. */
    async close() {
      closed = true;
      if (poller) clearInterval(poller);
      if (sweeper) clearInterval(sweeper);
      if (timer) clearTimeout(timer);
      for (const a of inflight.values()) a.abort();
      while (running || flushing) await new Promise((r) => setTimeout(r, 10));
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

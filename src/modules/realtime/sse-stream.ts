import type { Response } from 'express';
import type { CloseReason, TailHub, SubscribeOptions } from './tail-hub';
import { sseEventFrame } from './event-frames';
import { createBacklogJudge } from './slow-consumer';

export interface SseOptions {
  hub: TailHub;
  subscription: Omit<SubscribeOptions, 'sink'>;
  heartbeatMs: number;
  maxBufferedBytes: number;
  /** How long the backlog may stay above maxBufferedBytes before the stream is ended. */
  slowConsumerMs: number;
  /** Open streams, so shutdown can end them with a reconnect hint. */
  open: Set<() => void>;
  /** Registers the stream under its API key (ended if the key is revoked); returns unregister. */
  track(close: () => void): () => void;
}

/**
 * Serves a live tail as Server-Sent Events: replay after the cursor, `event: ready`, then
 * live events; `: ping` comments as heartbeats. A client that cannot keep up (its backlog stays
 * over the limit for slowConsumerMs; one large batch is not enough) is sent
 * `event: reconnect` and the stream ends, so it resumes with Last-Event-ID instead of this
 * replica buffering without bound.
 */
export function openSseStream(res: Response, o: SseOptions) {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(`retry: 2000\n: tail of ${o.subscription.threadId} after seq ${o.subscription.afterSeq}\n\n`);
  let ended = false;
  let handle: { close(): void } | null = null;
  /** Set when the cursor was below the retention horizon: the replay restarted there. */
  let purgedThrough: number | null = null;

  const backlog = createBacklogJudge(
    { maxBytes: o.maxBufferedBytes, graceMs: o.slowConsumerMs },
    () => res.writableLength,
    () => finish('event: reconnect\ndata: {"reason":"slow_consumer"}\n\n'),
  );
  const finish = (frame: string) => {
    if (ended) return;
    ended = true;
    backlog.stop();
    handle?.close();
    clearInterval(heartbeat);
    o.open.delete(shutdown);
    untrack();
    res.end(frame);
  };
  const shutdown = () => finish('event: reconnect\ndata: {"reason":"shutdown"}\nretry: 1000\n\n');
  o.open.add(shutdown);
  const untrack = o.track(() => finish('event: closed\ndata: {"reason":"revoked"}\n\n'));

  const heartbeat = setInterval(() => res.write(': ping\n\n'), o.heartbeatMs);
  heartbeat.unref();
  res.on('close', () => {
    ended = true;
    backlog.stop();
    handle?.close();
    clearInterval(heartbeat);
    o.open.delete(shutdown);
    untrack();
  });

  handle = o.hub.subscribe({
    ...o.subscription,
    sink: {
      send(events) {
        if (ended) return;
        res.write(events.map(sseEventFrame).join(''));
        backlog.check();
      },
      ready(seq) {
        if (ended) return;
        const reset = purgedThrough === null ? '' : `,"recovered":false,"purged_through_seq":${purgedThrough}`;
        res.write(`event: ready\ndata: {"seq":${seq}${reset}}\n\n`);
      },
      reset(horizon) {
        purgedThrough = horizon;
        if (!ended)
          res.write(
            `event: reset\ndata: {"recovered":false,"purged_through_seq":${horizon},"after_seq":${horizon}}\n\n`,
          );
      },
      drain() {
        if (ended || res.writableLength < o.maxBufferedBytes / 2) return Promise.resolve();
        return new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      },
      closed(reason: CloseReason) {
        if (reason === 'shutdown') return shutdown();
        finish(`event: closed\ndata: {"reason":"${reason}"}\n\n`);
      },
    },
  });
  if (ended) handle.close();
}

/** Test clients for the live tail: SSE over a fetch stream (eventsource-parser) and WebSocket (ws). */
import { EventEmitter } from 'node:events';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import WebSocket from 'ws';

async function until<T>(
  emitter: EventEmitter,
  check: () => T | undefined,
  what: string,
  timeoutMs: number,
): Promise<T> {
  const hit = check();
  if (hit !== undefined) return hit;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off('change', onChange);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const onChange = () => {
      const v = check();
      if (v === undefined) return;
      clearTimeout(timer);
      emitter.off('change', onChange);
      resolve(v);
    };
    emitter.on('change', onChange);
  });
}

export interface SseClient {
  status: number;
  messages: EventSourceMessage[];
  /** Events (messages without an `event:` name) parsed from data. */
  events(): any[];
  comments: string[];
  ended: boolean;
  waitFor<T>(check: () => T | undefined, what: string, timeoutMs?: number): Promise<T>;
  waitForEvents(n: number, timeoutMs?: number): Promise<any[]>;
  waitForEnd(timeoutMs?: number): Promise<void>;
  close(): void;
}

export async function openSse(url: string, headers: Record<string, string>): Promise<SseClient> {
  const abort = new AbortController();
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: abort.signal });
  const emitter = new EventEmitter();
  emitter.setMaxListeners(100);
  const client: SseClient = {
    status: res.status,
    messages: [],
    comments: [],
    ended: false,
    events: () => client.messages.filter((m) => m.event === undefined).map((m) => JSON.parse(m.data)),
    waitFor: (check, what, timeoutMs = 20_000) => until(emitter, check, what, timeoutMs),
    waitForEvents: (n, timeoutMs = 30_000) =>
      until(emitter, () => (client.events().length >= n ? client.events() : undefined), `${n} SSE events`, timeoutMs),
    waitForEnd: (timeoutMs = 20_000) =>
      until(emitter, () => (client.ended ? true : undefined), 'the SSE stream to end', timeoutMs).then(() => undefined),
    close: () => abort.abort(),
  };
  if (res.status !== 200 || !res.body) {
    client.ended = true;
    (client as any).body = await res.text();
    return client;
  }
  const parser = createParser({
    onEvent: (m) => {
      client.messages.push(m);
      emitter.emit('change');
    },
    onComment: (c) => {
      client.comments.push(c);
      emitter.emit('change');
    },
  });
  void (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>)
        parser.feed(decoder.decode(chunk, { stream: true }));
    } catch {
      /* aborted */
    }
    client.ended = true;
    emitter.emit('change');
  })();
  return client;
}

export interface WsClient {
  ws: WebSocket;
  messages: any[];
  send(msg: unknown): void;
  waitFor<T = any>(check: (m: any) => boolean, what: string, timeoutMs?: number): Promise<T>;
  eventsOf(threadId: string): any[];
  waitForEvents(threadId: string, n: number, timeoutMs?: number): Promise<any[]>;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

export async function openWs(url: string, headers: Record<string, string> = {}): Promise<WsClient> {
  const ws = new WebSocket(url, { headers });
  const emitter = new EventEmitter();
  emitter.setMaxListeners(100);
  const messages: any[] = [];
  ws.on('message', (data) => {
    messages.push(JSON.parse(data.toString()));
    emitter.emit('change');
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) =>
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode })),
    );
    ws.once('error', reject);
  });
  const client: WsClient = {
    ws,
    messages,
    closed,
    send: (m) => ws.send(JSON.stringify(m)),
    waitFor: (check, what, timeoutMs = 20_000) => until(emitter, () => messages.find(check), what, timeoutMs),
    eventsOf: (threadId) => messages.filter((m) => m.type === 'event' && m.thread_id === threadId).map((m) => m.event),
    waitForEvents: (threadId, n, timeoutMs = 30_000) =>
      until(
        emitter,
        () => (client.eventsOf(threadId).length >= n ? client.eventsOf(threadId) : undefined),
        `${n} WebSocket events of ${threadId}`,
        timeoutMs,
      ),
    close: () => ws.close(),
  };
  return client;
}

/** Headers for an API key acting as a user. */
export const as = (key: string, user?: string): Record<string, string> => ({
  authorization: `Bearer ${key}`,
  ...(user ? { 'x-user-id': user } : {}),
});

export const seqs = (events: Array<{ seq: number }>) => events.map((e) => e.seq);
export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

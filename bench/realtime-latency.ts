/**
 * Publish-to-receive latency of the live tail across two replicas.
 *
 *   npx tsx bench/realtime-latency.ts [--subscribers 1000] [--messages 200] [--rate 20] [--threads 1] [--clients 2]
 *                                     [--client raw|ws] [--profile DIR]
 *   (`npm run bench:realtime` runs the latency and the memory benchmark with their defaults)
 *
 * Two servers (src/server.ts child processes) share one scratch database. `subscribers`
 * WebSockets, alternating between the two, subscribe to `threads` threads. One publisher
 * appends `messages` messages through server 1 at `rate` per second (open loop). For every
 * (message, subscriber) pair it records the time from sending the POST to the event arriving
 * (publish → receive), and from the 201 arriving to the event arriving (ack → receive).
 * The subscribers live in `clients` worker threads (default 2), so one client event loop is
 * not the bottleneck; times are absolute (performance.timeOrigin + now()) across threads.
 * Each client thread reports its event loop's utilisation and delay over the run: a receive
 * time includes any wait in the client's own loop, and these say how much of it there was.
 * `--client raw` (default): each subscriber is a lean RFC 6455 client on a plain TCP socket (see
 * rawSubscriber); `--client ws`: the `ws` library's client, as before. Either way a receive is
 * timed when the client's JS has the frame's bytes. Also reported: per message, publish → 201,
 * → first and → last delivery; the servers' own means from /metrics (POST, group commit, NOTIFY
 * wake-up → handed to every subscriber); CPU seconds of each process over the run.
 * `--profile DIR` writes a V8 CPU profile of each server over the run (bench/profile-summary.ts).
 * DATABASE_URL names a PostgreSQL server; without it an embedded one is started. Loopback only.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { availableParallelism, loadavg } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { writeFileSync } from 'node:fs';
import WebSocket from 'ws';
import { percentile, request, scratchDatabase, startServer, subscribedSocket } from './common';
import { postgresCpu, postgresDelta, treeCpuSeconds } from './cpu';

const now = () => performance.timeOrigin + performance.now();

interface WorkerJob {
  urls: string[];
  key: string;
  threadIds: string[];
  /** Global subscriber numbers this worker owns (n % 2 picks the server, n % threads the thread). */
  subscribers: number[];
  /** 'raw': the lean subscriber below; 'ws': the `ws` library's client. */
  client: 'raw' | 'ws';
}

const EVENT_PREFIX = Buffer.from('{"type":"event"');
const READY_PREFIX = Buffer.from('{"type":"ready"');
const MESSAGE_ID = Buffer.from('"message_id":"k');
/** The read buffer every raw subscriber of a client thread shares (reads are handled synchronously). */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

/**
 * A lean WebSocket subscriber on a plain TCP socket: the RFC 6455 handshake, one masked
 * `subscribe` frame, then unmasked server frames parsed in place (text frames handed on as
 * bytes, pings answered with pongs). It does what any client must to read a frame, without a
 * general-purpose library's per-frame work (a Writable stream, UTF-8 validation, a string per
 * message): a thousand of them share the benchmark's cores with the servers, and the time of
 * the last subscriber to read an event is mostly the time the clients before it took.
 * Resolves once the subscription is ready.
 */
function rawSubscriber(
  base: string,
  key: string,
  threadId: string,
  onText: (payload: Buffer, at: number) => void,
): Promise<Socket> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    // `onread`: each read lands in the thread's one buffer and comes straight to `onData`,
    // without a Buffer and a stream 'data' event per read (a thousand sockets per message).
    const socket = connect({
      host: url.hostname,
      port: Number(url.port),
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (n: number, buf: Uint8Array) => {
          onData(buf.subarray(0, n) as Buffer);
          return true;
        },
      },
    });
    const timer = setTimeout(() => reject(new Error('subscribe timed out')), 60_000);
    let pending: Buffer | null = null;
    let upgraded = false;
    let ready = false;
    // Client frames must be masked; an all-zero mask leaves the payload as it is.
    const clientFrame = (opcode: number, payload: Buffer) => {
      if (payload.length > 125) throw new Error('client frame too long for this client');
      return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length, 0, 0, 0, 0]), payload]);
    };
    socket.once('error', reject);
    socket.on('connect', () =>
      socket.write(
        `GET /v1/ws HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
          `Authorization: Bearer ${key}\r\n\r\n`,
      ),
    );
    // `chunk` is the shared read buffer: whatever is kept past this call is copied.
    const onData = (chunk: Buffer) => {
      const at = now();
      let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      pending = null;
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return void (pending = Buffer.from(buf));
        if (!buf.subarray(0, 12).toString().startsWith('HTTP/1.1 101'))
          return reject(new Error(`upgrade refused: ${buf.subarray(0, end).toString()}`));
        upgraded = true;
        buf = buf.subarray(end + 4);
        socket.write(clientFrame(1, Buffer.from(JSON.stringify({ type: 'subscribe', thread_id: threadId }))));
      }
      let i = 0;
      while (buf.length - i >= 2) {
        const opcode = buf[i] & 0x0f;
        let n = buf[i + 1] & 0x7f;
        let head = 2;
        if (n === 126) {
          if (buf.length - i < 4) break;
          n = buf.readUInt16BE(i + 2);
          head = 4;
        } else if (n === 127) {
          if (buf.length - i < 10) break;
          n = buf.readUInt32BE(i + 2) * 2 ** 32 + buf.readUInt32BE(i + 6);
          head = 10;
        }
        if (buf.length - i < head + n) break;
        const payload = buf.subarray(i + head, i + head + n);
        i += head + n;
        if (opcode === 1) {
          if (!ready && payload.subarray(0, READY_PREFIX.length).equals(READY_PREFIX)) {
            ready = true;
            clearTimeout(timer);
            resolve(socket);
          }
          onText(payload, at);
        } else if (opcode === 9) socket.write(clientFrame(10, Buffer.from(payload)));
      }
      if (i < buf.length) pending = Buffer.from(buf.subarray(i));
    };
  });
}

/** Worker: opens its sockets, reports ready, records [message index, receive time] until told to finish. */
async function runWorker(job: WorkerJob) {
  const ks: number[] = [];
  const times: number[] = [];
  const sockets: Array<WebSocket | Socket> = [];
  const onText = (payload: Buffer, at: number) => {
    if (!payload.subarray(0, EVENT_PREFIX.length).equals(EVENT_PREFIX)) return;
    const p = payload.indexOf(MESSAGE_ID);
    if (p < 0) return;
    let k = 0;
    for (let j = p + MESSAGE_ID.length; payload[j] >= 0x30 && payload[j] <= 0x39; j++) k = k * 10 + payload[j] - 0x30;
    ks.push(k);
    times.push(at);
  };
  const onMessage = (data: string) => {
    if (!data.startsWith('{"type":"event"')) return;
    const at = now();
    const m = /"message_id":"k(\d+)"/.exec(data);
    if (!m) return;
    ks.push(Number(m[1]));
    times.push(at);
  };
  for (let i = 0; i < job.subscribers.length; i += 100) {
    const batch = job.subscribers
      .slice(i, i + 100)
      .map((n) =>
        job.client === 'raw'
          ? rawSubscriber(job.urls[n % 2], job.key, job.threadIds[n % job.threadIds.length], onText)
          : subscribedSocket(job.urls[n % 2], job.key, job.threadIds[n % job.threadIds.length], onMessage),
      );
    sockets.push(...(await Promise.all(batch)));
  }
  // Is this client thread itself a bottleneck? Its event-loop delay and utilisation over the run.
  const delay = monitorEventLoopDelay({ resolution: 1 });
  let elu = performance.eventLoopUtilization();
  parentPort!.postMessage({ type: 'ready' });
  parentPort!.on('message', (msg: { type: string }) => {
    if (msg.type === 'start') {
      delay.enable();
      elu = performance.eventLoopUtilization();
    }
    if (msg.type === 'count') parentPort!.postMessage({ type: 'count', received: ks.length });
    if (msg.type === 'finish') {
      delay.disable();
      const loop = {
        utilization: performance.eventLoopUtilization(elu).utilization,
        delayP50: delay.percentile(50) / 1e6,
        delayP99: delay.percentile(99) / 1e6,
        delayMax: delay.max / 1e6,
      };
      for (const ws of sockets)
        if ('terminate' in ws) ws.terminate();
        else ws.destroy();
      parentPort!.postMessage({ type: 'result', ks, times, loop });
    }
  });
}

/** A server's histogram sums and counts, by series name with labels. */
async function serverMetrics(url: string, token: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\S+_(?:sum|count)(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** `--profile DIR`: a V8 CPU profile of a server over the publishing phase, through its inspector. */
async function startProfiler(server: Awaited<ReturnType<typeof startServer>>) {
  const [target] = (await (await fetch(`http://127.0.0.1:${server.inspectorPort}/json/list`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 0 });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let ids = 0;
  const call = (method: string) =>
    new Promise<{ profile?: unknown }>((resolve) => {
      const id = ++ids;
      const on = (raw: WebSocket.RawData) => {
        const m = JSON.parse(raw.toString()) as { id?: number; result?: { profile?: unknown } };
        if (m.id !== id) return;
        ws.off('message', on);
        resolve(m.result ?? {});
      };
      ws.on('message', on);
      ws.send(JSON.stringify({ id, method }));
    });
  await call('Profiler.enable');
  await call('Profiler.start');
  return async () => {
    const { profile } = await call('Profiler.stop');
    ws.close();
    return profile;
  };
}

function ask<T>(w: Worker, type: string, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { type: string }) => {
      if (m.type !== reply) return;
      w.off('message', on);
      resolve(m as T);
    };
    w.on('message', on);
    w.postMessage({ type });
  });
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      subscribers: { type: 'string', default: '1000' },
      messages: { type: 'string', default: '200' },
      rate: { type: 'string', default: '20' },
      threads: { type: 'string', default: '1' },
      clients: { type: 'string', default: '2' },
      client: { type: 'string', default: 'raw' },
      profile: { type: 'string' },
    },
  });
  const subscribers = Number(args.subscribers);
  const messages = Number(args.messages);
  const rate = Number(args.rate);
  const threads = Number(args.threads);
  const clients = Number(args.clients);

  const started = Date.now();
  const database = await scratchDatabase('rt_latency');
  const inspect = { inspect: args.profile !== undefined };
  // A token so the servers' /metrics answer (production mode): the server-side breakdown below.
  const metricsToken = 'realtime-latency-bench-metrics';
  const env = { METRICS_TOKEN: metricsToken };
  const servers = [await startServer(database.url, env, inspect), await startServer(database.url, env, inspect)];
  const workers: Worker[] = [];
  try {
    const key = database.secretKey;
    const threadIds = Array.from({ length: threads }, (_, i) => `bench-${i}`);
    for (const id of threadIds) await request(servers[0].url, key, 'POST', '/v1/threads', { id, type: 'channel' });

    for (let c = 0; c < clients; c++) {
      const job: WorkerJob = {
        urls: servers.map((s) => s.url),
        key,
        threadIds,
        subscribers: Array.from({ length: subscribers }, (_, n) => n).filter((n) => n % clients === c),
        client: args.client === 'ws' ? 'ws' : 'raw',
      };
      // Workers do not inherit tsx's loader: register its require hook, then load this file.
      const w = new Worker(`require('tsx/cjs'); require(${JSON.stringify(__filename)});`, {
        eval: true,
        workerData: job,
      });
      workers.push(w);
    }
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once('message', () => resolve());
            w.once('error', reject);
          }),
      ),
    );
    process.stdout.write(
      `${subscribers} subscribers ready (over 2 servers, ${threads} thread(s), ${clients} client threads, ${args.client} clients)\n`,
    );

    const perThread = new Map(threadIds.map((t) => [t, 0]));
    for (let n = 0; n < subscribers; n++)
      perThread.set(threadIds[n % threads], perThread.get(threadIds[n % threads])! + 1);
    const sentAt: number[] = [];
    const ackedAt: number[] = [];
    let expected = 0;
    const interval = 1000 / rate;
    const profilers = args.profile !== undefined ? await Promise.all(servers.map(startProfiler)) : [];
    const metrics0 = await Promise.all(servers.map((s) => serverMetrics(s.url, metricsToken)));
    const cpu0 = {
      servers: servers.map((s) => treeCpuSeconds(s.child.pid!)),
      bench: process.cpuUsage(),
      pg: postgresCpu(),
    };
    for (const w of workers) w.postMessage({ type: 'start' });
    const t0 = performance.now();
    const posts: Promise<void>[] = [];
    for (let k = 0; k < messages; k++) {
      const wait = t0 + k * interval - performance.now();
      if (wait > 0) await sleep(wait);
      const thread = threadIds[k % threads];
      expected += perThread.get(thread)!;
      sentAt[k] = now();
      posts.push(
        request(servers[0].url, key, 'POST', `/v1/threads/${thread}/messages`, { id: `k${k}`, body: { k } }).then(
          () => void (ackedAt[k] = now()),
        ),
      );
    }
    await Promise.all(posts);
    const deadline = Date.now() + 60_000;
    let received = 0;
    for (;;) {
      received = (await Promise.all(workers.map((w) => ask<{ received: number }>(w, 'count', 'count')))).reduce(
        (a, r) => a + r.received,
        0,
      );
      if (received >= expected || Date.now() > deadline) break;
      await sleep(100);
    }
    const cpuWall = (performance.now() - t0) / 1000;
    const benchCpu = process.cpuUsage(cpu0.bench);
    const cpu = {
      servers: servers.map((s, i) => treeCpuSeconds(s.child.pid!) - cpu0.servers[i]),
      bench: (benchCpu.user + benchCpu.system) / 1e6,
      pg: postgresDelta(cpu0.pg, postgresCpu()),
    };
    const metrics1 = await Promise.all(servers.map((s) => serverMetrics(s.url, metricsToken)));
    // Summed over the series of `name` whose labels contain every one of `labels`.
    const mean = (i: number, name: string, labels: string[] = []) => {
      const d = (suffix: string) => {
        let sum = 0;
        for (const [series, v] of metrics1[i])
          if (series.startsWith(`${name}_${suffix}`) && labels.every((l) => series.includes(l)))
            sum += v - (metrics0[i].get(series) ?? 0);
        return sum;
      };
      return d('count') > 0 ? `${((d('sum') / d('count')) * 1000).toFixed(1)} ms (${d('count')})` : 'n/a';
    };
    const postLabels = ['method="POST"', '/messages"', 'status="201"'];
    const breakdown = [
      `server means (count): POST handled ${mean(0, 'progressdb_http_request_duration_seconds', postLabels)}, group commit ${mean(0, 'progressdb_ingest_commit_seconds')}, NOTIFY wake-up → handed to every subscriber: server 1 ${mean(0, 'progressdb_notify_delivery_lag_seconds')}, server 2 ${mean(1, 'progressdb_notify_delivery_lag_seconds')}`,
    ];
    for (const [i, stop] of profilers.entries())
      writeFileSync(`${args.profile}/server-${i + 1}.cpuprofile`, JSON.stringify(await stop()));
    type Loop = { utilization: number; delayP50: number; delayP99: number; delayMax: number };
    const results = await Promise.all(
      workers.map((w) => ask<{ ks: number[]; times: number[]; loop: Loop }>(w, 'finish', 'result')),
    );
    const publishToReceive: number[] = [];
    const ackToReceive: number[] = [];
    for (const r of results) {
      for (let i = 0; i < r.ks.length; i++) {
        publishToReceive.push(r.times[i] - sentAt[r.ks[i]]);
        // Negative: the event reached the subscriber before the publisher had read its 201.
        ackToReceive.push(r.times[i] - ackedAt[r.ks[i]]);
      }
    }
    // Per message: the first and the last delivery of it (the fan-out's spread).
    const first = new Array<number>(messages).fill(Infinity);
    const last = new Array<number>(messages).fill(-Infinity);
    for (const r of results)
      for (let i = 0; i < r.ks.length; i++) {
        const k = r.ks[i];
        first[k] = Math.min(first[k], r.times[i] - sentAt[k]);
        last[k] = Math.max(last[k], r.times[i] - sentAt[k]);
      }
    const publishToAck = ackedAt.map((a, k) => a - sentAt[k]).sort((a, b) => a - b);
    const firsts = first.filter(Number.isFinite).sort((a, b) => a - b);
    const lasts = last.filter(Number.isFinite).sort((a, b) => a - b);
    publishToReceive.sort((a, b) => a - b);
    ackToReceive.sort((a, b) => a - b);
    const fmt = (v: number) => v.toFixed(1);
    const row = (name: string, xs: number[]) =>
      `| ${name} | ${xs.length} | ${fmt(percentile(xs, 50))} | ${fmt(percentile(xs, 90))} | ${fmt(percentile(xs, 99))} | ${fmt(xs[xs.length - 1])} |`;
    process.stdout.write(
      [
        '',
        `realtime latency: nproc=${availableParallelism()}, load average ${loadavg()
          .map((l) => l.toFixed(2))
          .join(
            ' ',
          )}, node ${process.version}, ${database.embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}`,
        `${subscribers} WebSocket subscribers (${args.client === 'ws' ? '`ws` library' : 'lean'} clients) over 2 servers (${clients} client threads), ${threads} thread(s), ${messages} messages at ${rate}/s through server 1; received ${received} of ${expected} deliveries in ${((Date.now() - started) / 1000).toFixed(0)} s total`,
        '',
        '| measure | samples | p50 ms | p90 ms | p99 ms | max ms |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
        row('publish → receive', publishToReceive),
        row('ack (201) → receive (negative: event before the 201)', ackToReceive),
        row('publish → 201 (per message)', publishToAck),
        row('publish → first receive (per message)', firsts),
        row('publish → last receive (per message)', lasts),
        '',
        ...breakdown,
        `client threads' event loops while receiving (utilisation; delay p50/p99/max ms): ${results
          .map(
            ({ loop: l }) =>
              `${(l.utilization * 100).toFixed(0)} %, ${fmt(l.delayP50)}/${fmt(l.delayP99)}/${fmt(l.delayMax)}`,
          )
          .join('; ')}`,
        `CPU while publishing and receiving (${cpuWall.toFixed(1)} s): server 1 ${fmt(cpu.servers[0])} s, server 2 ${fmt(cpu.servers[1])} s, benchmark (publisher and subscribers) ${fmt(cpu.bench)} s, PostgreSQL ${fmt(cpu.pg)} s`,
        '',
      ].join('\n'),
    );
    if (received !== expected) process.exitCode = 1;
  } finally {
    for (const w of workers) await w.terminate();
    for (const s of servers) await s.stop();
    await database.drop();
  }
}

if (isMainThread) {
  main().catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
} else {
  runWorker(workerData as WorkerJob).catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}

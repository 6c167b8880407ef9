/**
 * An open-loop, paced load: requests are started on a fixed schedule (`rate` per second) no
 * matter how long earlier ones take, over at most `connections` keep-alive connections, and each
 * latency is measured from the request's scheduled start (so time spent queued behind a slow
 * response counts, as wrk2 does). wrk2 is not packaged for Debian; this small client runs in a
 * worker thread so the harness's own event loop does not pace it.
 *
 * It writes each request's bytes straight to a socket and reads only what it needs of the
 * response (status, length): node:http's client cost ~400 µs of CPU per request here, on the
 * two cores the service and PostgreSQL share, and its completions queued behind that work
 * showed up as latency the service never had.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { LoadResult, WrkLoad } from './wrk';

interface Job {
  url: string;
  rate: number;
  seconds: number;
  connections: number;
  load: WrkLoad;
}

interface WorkerOut {
  latencies: number[];
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  seconds: number;
}

const TIMEOUT_MS = 10_000;
const HEAD_END = Buffer.from('\r\n\r\n');

/**
 * Where one HTTP/1.1 response ends in `buf`: its status and the offset after it, or null while
 * incomplete. Bodies come with Content-Length or chunked encoding (what node's server sends).
 */
export function parseResponse(buf: Buffer): { status: number; end: number } | null {
  const head = buf.indexOf(HEAD_END);
  if (head < 0) return null;
  const text = buf.toString('latin1', 0, head).toLowerCase();
  const status = Number(text.slice(9, 12));
  const bodyStart = head + 4;
  const length = /\r\ncontent-length:\s*(\d+)/.exec(text);
  if (length) {
    const end = bodyStart + Number(length[1]);
    return buf.length >= end ? { status, end } : null;
  }
  if (!/\r\ntransfer-encoding:[^\r]*chunked/.test(text)) return { status, end: bodyStart };
  let at = bodyStart;
  for (;;) {
    const line = buf.indexOf('\r\n', at, 'latin1');
    if (line < 0) return null;
    const size = parseInt(buf.toString('latin1', at, line), 16);
    // A chunk: its size line, its bytes, CRLF; the last (size 0) is followed by CRLF (no trailers).
    const next = line + 2 + size + 2;
    if (buf.length < next) return null;
    if (size === 0) return { status, end: next };
    at = next;
  }
}

interface Conn {
  socket: net.Socket;
  buf: Buffer;
  /** Scheduled start of the request in flight on it, or null when idle. */
  scheduled: number | null;
  sentAt: number;
}

async function worker(job: Job): Promise<WorkerOut> {
  const u = new URL(job.url);
  const run = randomBytes(6).toString('hex');
  const latencies: number[] = [];
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let timeouts = 0;
  let n = 0;
  const idle: Conn[] = [];
  /** Requests due while every connection was busy: they wait, and their wait counts. */
  const waiting: Array<{ scheduled: number; bytes: Buffer }> = [];
  const conns = new Set<Conn>();
  let stopping = false;

  const request = (): Buffer => {
    n++;
    const t = job.load.targets[Math.floor(Math.random() * job.load.targets.length)];
    const body = job.load.body?.replaceAll('{n}', `p-${n}-${run}`);
    let head = `${job.load.method} ${t.path} HTTP/1.1\r\nhost: ${u.host}\r\n`;
    for (const [k, v] of Object.entries(t.headers)) head += `${k}: ${v}\r\n`;
    if (job.load.idempotency) head += `idempotency-key: paced-${n}-${run}\r\n`;
    if (body !== undefined) head += `content-length: ${Buffer.byteLength(body)}\r\n`;
    return Buffer.from(`${head}\r\n${body ?? ''}`);
  };

  const send = (c: Conn, scheduled: number, bytes: Buffer) => {
    c.scheduled = scheduled;
    c.sentAt = performance.now();
    c.socket.write(bytes);
  };

  const release = (c: Conn) => {
    c.scheduled = null;
    const next = waiting.shift();
    if (next) send(c, next.scheduled, next.bytes);
    else idle.push(c);
  };

  const open = (): Promise<Conn> =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ host: u.hostname, port: Number(u.port), noDelay: true });
      const c: Conn = { socket, buf: Buffer.alloc(0), scheduled: null, sentAt: 0 };
      socket.once('connect', () => {
        conns.add(c);
        resolve(c);
      });
      socket.on('data', (chunk: Buffer) => {
        c.buf = c.buf.length === 0 ? chunk : Buffer.concat([c.buf, chunk]);
        const r = parseResponse(c.buf);
        if (!r || c.scheduled === null) return;
        c.buf = c.buf.subarray(r.end);
        latencies.push(performance.now() - c.scheduled);
        if (r.status >= 200 && r.status < 400) ok++;
        else non2xx++;
        release(c);
      });
      socket.on('error', (e) => {
        if (!conns.has(c)) reject(e);
      });
      socket.on('close', () => {
        const was = conns.delete(c);
        const i = idle.indexOf(c);
        if (i >= 0) idle.splice(i, 1);
        if (c.scheduled !== null) errors++;
        // A connection the server closed is replaced (keep-alive as node's Agent would).
        if (was && !stopping) void open().then(release, () => undefined);
      });
    });

  idle.push(...(await Promise.all(Array.from({ length: job.connections }, open))));
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const c of conns)
      if (c.scheduled !== null && now - c.sentAt > TIMEOUT_MS) {
        timeouts++;
        c.scheduled = null;
        c.socket.destroy();
      }
  }, 500);

  const interval = 1000 / job.rate;
  const t0 = performance.now();
  const end = t0 + job.seconds * 1000;
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(Math.floor((Math.min(now, end) - t0) / interval), Math.floor(job.seconds * job.rate));
      while (sent < due) {
        const scheduled = t0 + sent++ * interval;
        const c = idle.pop();
        if (c) send(c, scheduled, request());
        else waiting.push({ scheduled, bytes: request() });
      }
      if (now < end) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  const stopped = performance.now();
  const busy = () => waiting.length > 0 || [...conns].some((c) => c.scheduled !== null);
  while (busy() && performance.now() - stopped < TIMEOUT_MS) await new Promise((r) => setTimeout(r, 10));
  stopping = true;
  clearInterval(watchdog);
  for (const c of conns) c.socket.destroy();
  return { latencies, ok, non2xx, errors, timeouts: timeouts + waiting.length, seconds: (stopped - t0) / 1000 };
}

const pct = (sorted: number[], p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

/** Runs the paced load in a worker thread; CPU share is this process's (all threads) over the run. */
export async function runPaced(job: Job): Promise<LoadResult> {
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  // Workers do not inherit tsx's loader: register its require hook, then load this file.
  const w = new Worker(`require('tsx/cjs'); require(${JSON.stringify(__filename)});`, { eval: true, workerData: job });
  const out = await new Promise<WorkerOut>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (code) => code !== 0 && reject(new Error(`paced worker exited with ${code}`)));
  });
  await w.terminate();
  const cpu = process.cpuUsage(cpu0);
  const wall = (performance.now() - wall0) / 1000;
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const s = out.latencies.sort((a, b) => a - b);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    generator: 'paced raw HTTP/1.1 client, open loop (worker thread of the harness)',
    seconds: out.seconds,
    requests: out.ok + out.non2xx,
    ok: out.ok,
    non2xx: out.non2xx,
    errors: { connect: 0, read: out.errors, write: 0, timeout: out.timeouts },
    latency: {
      p50: r3(pct(s, 50)),
      p75: r3(pct(s, 75)),
      p90: r3(pct(s, 90)),
      p97_5: r3(pct(s, 97.5)),
      p99: r3(pct(s, 99)),
      p99_9: r3(pct(s, 99.9)),
      max: r3(s[s.length - 1] ?? 0),
    },
    cpuSeconds,
    cpuShare: cpuSeconds / (wall * availableParallelism()),
  };
}

if (!isMainThread && workerData && (workerData as Job).rate) {
  worker(workerData as Job).then(
    (out) => parentPort!.postMessage(out),
    (e) => {
      throw e;
    },
  );
}

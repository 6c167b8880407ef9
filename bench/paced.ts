/**
 * An open-loop, paced load: requests are started on a fixed schedule (`rate` per second) no
 * matter how long earlier ones take, over at most `connections` keep-alive connections, and each
 * latency is measured from the request's scheduled start (so time spent queued behind a slow
 * response counts, as wrk2 does). wrk2 is not packaged for Debian; this small node:http client
 * runs in a worker thread so the harness's own event loop does not pace it.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
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

async function worker(job: Job): Promise<WorkerOut> {
  const u = new URL(job.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.connections });
  const run = randomBytes(6).toString('hex');
  const latencies: number[] = [];
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let timeouts = 0;
  let inFlight = 0;
  let n = 0;
  const interval = 1000 / job.rate;
  const t0 = performance.now();
  const end = t0 + job.seconds * 1000;
  let sent = 0;
  const fire = (scheduled: number) => {
    n++;
    const t = job.load.targets[Math.floor(Math.random() * job.load.targets.length)];
    const headers: Record<string, string> = { ...t.headers };
    const body = job.load.body?.replaceAll('{n}', `p-${n}-${run}`);
    if (job.load.idempotency) headers['idempotency-key'] = `paced-${n}-${run}`;
    if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
    inFlight++;
    const req = http.request(
      { host: u.hostname, port: u.port, method: job.load.method, path: t.path, headers, agent, timeout: 10_000 },
      (res) => {
        res.resume();
        res.on('end', () => {
          inFlight--;
          latencies.push(performance.now() - scheduled);
          if (res.statusCode! >= 200 && res.statusCode! < 400) ok++;
          else non2xx++;
        });
      },
    );
    req.on('timeout', () => {
      timeouts++;
      req.destroy();
    });
    req.on('error', () => {
      inFlight--;
      errors++;
    });
    req.end(body);
  };
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(Math.floor((Math.min(now, end) - t0) / interval), Math.floor(job.seconds * job.rate));
      while (sent < due) fire(t0 + sent++ * interval);
      if (now < end) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  const stopped = performance.now();
  while (inFlight > 0 && performance.now() - stopped < 10_000) await new Promise((r) => setTimeout(r, 10));
  agent.destroy();
  return { latencies, ok, non2xx, errors, timeouts, seconds: (stopped - t0) / 1000 };
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
    generator: 'paced node:http client, open loop (worker thread of the harness)',
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

/**
 * wrk as the load generator: a separate C process, so the harness's own event loop is not part
 * of what is measured. Each run is wrapped in `sh`, which waits for wrk and then reads its own
 * /proc/<pid>/stat: cutime + cstime are wrk's whole CPU time (all its threads), exactly.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';

export const WRK_SCRIPT = path.join(__dirname, 'wrk', 'requests.lua');
export const WRK_INSTALL_HINT =
  'wrk (the load generator) is not installed: `apt-get install wrk` (Debian/Ubuntu), `brew install wrk` (macOS), or set BENCH_WRK to its path';

let clockTicks: number | null = null;
/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat. */
export function clockTicksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** The wrk binary to use, or null when there is none. */
export function findWrk(): string | null {
  const candidates = [process.env.BENCH_WRK, '/usr/bin/wrk', '/usr/local/bin/wrk', '/opt/homebrew/bin/wrk'];
  for (const c of candidates) if (c && existsSync(c)) return c;
  try {
    return execFileSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

export interface WrkTarget {
  path: string;
  headers: Record<string, string>;
  /** Overrides the load's method and body for this target (a mixed load). */
  method?: 'GET' | 'POST';
  body?: string;
}

export interface WrkLoad {
  method: 'GET' | 'POST';
  targets: WrkTarget[];
  /** Request body; each "{n}" becomes a counter unique across the run. */
  body?: string;
  /** A distinct Idempotency-Key on every request. */
  idempotency?: boolean;
}

export interface LoadResult {
  generator: string;
  seconds: number;
  requests: number;
  /** Responses with a 2xx/3xx status. */
  ok: number;
  non2xx: number;
  errors: { connect: number; read: number; write: number; timeout: number };
  latency: { p50: number; p75: number; p90: number; p97_5: number; p99: number; p99_9: number; max: number };
  /** CPU seconds the load generator used (all its threads). */
  cpuSeconds: number;
  /** cpuSeconds / (wall seconds × cores): the share of the machine the load generator took. */
  cpuShare: number;
}

const luaString = (s: string) => JSON.stringify(s); // JSON string escapes are valid Lua escapes for our ASCII input
function luaConfig(load: WrkLoad, run: string): string {
  const targets = load.targets
    .map(
      (t) =>
        `{path=${luaString(t.path)},` +
        (t.method ? `method=${luaString(t.method)},` : '') +
        (t.body !== undefined ? `body=${luaString(t.body)},` : '') +
        `headers={${Object.entries(t.headers)
          .map(([k, v]) => `[${luaString(k)}]=${luaString(v)}`)
          .join(',')}}}`,
    )
    .join(',\n');
  return `return {method=${luaString(load.method)},run=${luaString(run)},idempotency=${load.idempotency ? 'true' : 'false'},body=${load.body === undefined ? 'nil' : luaString(load.body)},targets={\n${targets}\n}}\n`;
}

/**
 * One closed-loop wrk run: `connections` connections over `threads` wrk threads for `seconds`.
 * With no load (a plain GET of `url`), wrk runs without a script.
 */
export async function runWrk(opts: {
  url: string;
  connections: number;
  threads: number;
  seconds: number;
  load?: WrkLoad;
  timeoutSeconds?: number;
}): Promise<LoadResult> {
  const wrk = findWrk();
  if (!wrk) throw new Error(WRK_INSTALL_HINT);
  const dir = mkdtempSync(path.join(tmpdir(), 'pdb-wrk-'));
  try {
    const config = path.join(dir, 'config.lua');
    const statFile = path.join(dir, 'stat');
    writeFileSync(
      config,
      luaConfig(opts.load ?? { method: 'GET', targets: [{ path: '/', headers: {} }] }, randomBytes(6).toString('hex')),
    );
    const u = new URL(opts.url);
    const args = [
      '-t',
      String(Math.max(1, Math.min(opts.threads, opts.connections))),
      '-c',
      String(opts.connections),
      '-d',
      `${opts.seconds}s`,
      '--timeout',
      `${opts.timeoutSeconds ?? 10}s`,
      '--latency',
      '-s',
      WRK_SCRIPT,
      `${u.protocol}//${u.host}`,
      '--',
      config,
    ];
    const started = process.hrtime.bigint();
    const out = await new Promise<string>((resolve, reject) => {
      // sh waits for wrk, then its own stat (read by a child, cat) carries wrk's CPU as cutime/cstime.
      const child = spawn(
        'sh',
        [
          '-c',
          'stat_file=$1; shift; "$@"; rc=$?; cat /proc/$$/stat > "$stat_file"; exit $rc',
          'sh',
          statFile,
          wrk,
          ...args,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0
          ? resolve(stdout)
          : reject(new Error(`wrk exited with ${code}: ${(stderr || stdout).trim().slice(-800)}`)),
      );
    });
    const wall = Number(process.hrtime.bigint() - started) / 1e9;
    const line = out.split('\n').find((l) => l.startsWith('WRK_JSON '));
    if (!line) throw new Error(`wrk printed no summary:\n${out.slice(-800)}`);
    const j = JSON.parse(line.slice('WRK_JSON '.length)) as {
      duration_us: number;
      requests: number;
      connect: number;
      read: number;
      write: number;
      status: number;
      timeout: number;
      latency_ms: Record<string, number>;
    };
    // /proc/<pid>/stat: fields after the ")" of comm; cutime and cstime are fields 16 and 17.
    const stat = readFileSync(statFile, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuSeconds = (Number(fields[16 - 3]) + Number(fields[17 - 3])) / clockTicksPerSecond();
    const seconds = j.duration_us / 1e6;
    const L = j.latency_ms;
    return {
      generator: `wrk (${opts.threads} thread${opts.threads > 1 ? 's' : ''})`,
      seconds,
      requests: j.requests,
      ok: j.requests - j.status,
      non2xx: j.status,
      errors: { connect: j.connect, read: j.read, write: j.write, timeout: j.timeout },
      latency: {
        p50: L['50'],
        p75: L['75'],
        p90: L['90'],
        p97_5: L['97.5'],
        p99: L['99'],
        p99_9: L['99.9'],
        max: L.max,
      },
      cpuSeconds,
      cpuShare: cpuSeconds / (wall * availableParallelism()),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

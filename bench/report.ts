/**
 * The report of `npm run bench`: its JSON shape (bench/results/latest.json), the generated
 * Markdown (bench/results/latest.md and BENCHMARKS.md's "Read and write path" section) and the
 * issue's targets computed from one run. `npm run bench:docs` re-renders all of it from the JSON.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { CeilingRow } from './pg-ceiling';

export interface Latency {
  p50: number;
  p75: number;
  p90: number;
  p97_5: number;
  p99: number;
  p99_9: number;
  max: number;
}

export interface ScenarioResult {
  name: string;
  title: string;
  /** Which load generator drove it (wrk, or the paced client). */
  generator: string;
  connections: number;
  seconds: number;
  /** Paced (open loop) at this many requests per second; null = closed loop, as fast as it goes. */
  overallRate: number | null;
  requestsPerSecond: number;
  messagesPerSecond: number;
  latency: Latency;
  errors: number;
  non2xx: number;
  /** Share of the machine (CPU seconds / wall seconds / nproc) each party used during the scenario. */
  cpu: { loadGenerator: number; service: number; postgres: number };
  /** The PostgreSQL ceiling row this scenario compares with, and by which figure. */
  pgCeiling: { scenario: string; by: 'tx' | 'rows'; ours: 'requests' | 'messages' } | null;
  verification: Verification | null;
}

/** What the harness checks in the database after a write scenario. */
export interface Verification {
  ok: boolean;
  threadsChecked: number;
  /** Threads whose log is not exactly seqs 1…last_seq (or purged horizon+1…last_seq). */
  gapViolations: number;
  /** Messages in 2xx responses the load generator counted (a mixed load's are not told apart: gaps only). */
  acknowledgedMessages: number | null;
  /** Messages the scenario added to the database. */
  storedMessages: number;
  /** At most this many may be stored unacknowledged: requests still in flight when the load stopped. */
  maxUnacknowledged: number;
}

export interface FrameworkRow {
  name: string;
  requestsPerSecond: number;
  p50: number;
  p99: number;
  errors: number;
  loadGeneratorCpu: number;
}

export interface Report {
  when: string;
  command: string;
  settings: {
    seconds: number;
    connections: number;
    loadGenerator: string;
    wrkThreads: number;
    workers: number;
    server: 'tsx' | 'compiled';
    rateLimiter: boolean;
    ceilingSeconds: number;
    ceilingScript: string | null;
    threads: number;
    batch: number;
    seed: { perThread: number; smallThread: number; bigThread: number; seconds: number };
  };
  machine: {
    nproc: number;
    cpu: string;
    node: string;
    postgres: string;
    database: string;
    loadAverageAtStart: number[];
    loadAverageAtEnd: number[];
  };
  framework: FrameworkRow[];
  ceiling: CeilingRow[];
  scenarios: ScenarioResult[];
  /** Append (spread) and read req/s with each WEB_CONCURRENCY tried. */
  workersComparison: Array<{ workers: number; appendRps: number; readRps: number }>;
  /** BENCH_COMPARE_SERVER=1 (npm run bench:compiled): req/s per scenario under tsx and compiled. */
  serverComparison?: Array<{ scenario: string; tsx: number; compiled: number }>;
}

const n0 = (x: number) => Math.round(x).toLocaleString('en-US');
const ms = (x: number) => (x < 10 ? x.toFixed(1) : x.toFixed(0));
const pct = (x: number) => `${(x * 100).toFixed(0)} %`;
const times = (x: number | null) => (x === null || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(2)}×`);

export const FRAMEWORK_CEILING = 'express 5';

export function frameworkCeiling(r: Report): number | null {
  return r.framework.find((f) => f.name === FRAMEWORK_CEILING)?.requestsPerSecond ?? null;
}

export function frameworkRatio(r: Report, s: ScenarioResult): number | null {
  const c = frameworkCeiling(r);
  return c ? s.requestsPerSecond / c : null;
}

export function pgRatio(r: Report, s: ScenarioResult): { ratio: number; label: string } | null {
  if (!s.pgCeiling) return null;
  const c = r.ceiling.find((x) => x.scenario === s.pgCeiling!.scenario);
  if (!c) return null;
  const theirs = s.pgCeiling.by === 'tx' ? c.txPerSecond : c.rowsPerSecond;
  const ours = s.pgCeiling.ours === 'requests' ? s.requestsPerSecond : s.messagesPerSecond;
  return theirs > 0 ? { ratio: ours / theirs, label: `${s.pgCeiling.scenario} ${s.pgCeiling.by}/s` } : null;
}

export interface TargetCheck {
  scenario: string;
  target: string;
  figure: string;
  met: boolean | null;
}

/** The targets of issue 11, as ratios to the ceilings measured in the same run. */
export function checkTargets(r: Report): TargetCheck[] {
  const s = (name: string) => r.scenarios.find((x) => x.name === name);
  const fc = frameworkCeiling(r);
  const out: TargetCheck[] = [];
  const vsFramework = (name: string, scenario: string, min: number) => {
    const x = s(name);
    const ratio = x && fc ? x.requestsPerSecond / fc : null;
    out.push({
      scenario,
      target: `≥ ${min.toFixed(2)}× bare express's empty-route req/s`,
      figure:
        x && fc
          ? `${n0(x.requestsPerSecond)} / ${n0(fc)} = ${times(ratio)}`
          : x
            ? `${n0(x.requestsPerSecond)} req/s (no framework ceiling)`
            : 'not run',
      met: ratio === null ? null : ratio >= min,
    });
  };
  vsFramework('read-latest-50', 'latest-50 read, secret key', 0.5);
  vsFramework('read-latest-50-pk', 'latest-50 read, publishable key + signed user, members-only thread', 0.4);
  const big = s('read-big-thread');
  const small = s('read-small-thread');
  out.push({
    scenario: `latest-50 on a ${n0(r.settings.seed.bigThread)}-message thread`,
    target: `within 10 % of the ${n0(r.settings.seed.smallThread)}-message thread`,
    figure:
      big && small
        ? `${n0(big.requestsPerSecond)} vs ${n0(small.requestsPerSecond)} req/s (${((big.requestsPerSecond / small.requestsPerSecond - 1) * 100).toFixed(1)} %)`
        : 'not run',
    met: big && small ? big.requestsPerSecond >= 0.9 * small.requestsPerSecond : null,
  });
  vsFramework('append-spread', 'single appends spread over 1,000 threads, secret key', 0.4);
  vsFramework('append-pk', 'single appends as a publishable-key user', 0.35);
  const half = s('append-spread-half-rate');
  out.push({
    scenario: 'append p99 at half the maximum rate',
    target: '≤ 20 ms',
    figure: half ? `p99 ${ms(half.latency.p99)} ms at ${n0(half.requestsPerSecond)} req/s (paced)` : 'not run',
    met: half ? half.latency.p99 <= 20 : null,
  });
  out.push({
    scenario: 'live tail publish → receive p99, 1,000 subscribers over 2 replicas at 20 msg/s',
    target: '≤ 30 ms',
    figure: 'measured by `npm run bench:realtime` (Realtime section)',
    met: null,
  });
  const checks = r.scenarios.filter((x) => x.verification);
  out.push({
    scenario: 'after each write scenario',
    target: 'every thread gapless; every acknowledged message stored',
    figure: checks.map((x) => `${x.name} ${x.verification!.ok ? 'OK' : 'FAILED'}`).join(', ') || 'no write scenario',
    met: checks.length ? checks.every((x) => x.verification!.ok) : null,
  });
  return out;
}

/** The generated part of BENCHMARKS.md (also bench/results/latest.md). */
export function renderMarkdown(r: Report): string {
  const L: string[] = [];
  // The run itself loads the machine, so only the load before it started says whether
  // something else was running.
  const busy = r.machine.loadAverageAtStart[0] > r.machine.nproc * 0.5;
  const st = r.settings;
  L.push(
    `Run ${r.when.replace('T', ' ').slice(0, 16)} UTC — \`${r.command}\`: ${st.seconds} s per scenario, ${st.connections} connections, ` +
      `load generator ${st.loadGenerator}, closed loop unless paced; server \`${st.server === 'compiled' ? 'node dist/src/server.js' : 'tsx src/server.ts'}\`, ` +
      `${st.workers} worker${st.workers > 1 ? 's' : ''} (WEB_CONCURRENCY), rate limiter ${st.rateLimiter ? 'on' : 'off'}.`,
  );
  L.push('');
  L.push(
    `Machine: \`nproc\` = ${r.machine.nproc} (${r.machine.cpu}), Node ${r.machine.node}, PostgreSQL ${r.machine.postgres} (${r.machine.database}); ` +
      `database, service and load generator all on it. Load average ${r.machine.loadAverageAtStart.join(' ')} at the start, ` +
      `${r.machine.loadAverageAtEnd.join(' ')} at the end` +
      (busy ? ' — **the machine was busy with other work when this run started: figures are low and noisy.**' : '.'),
  );
  L.push('');
  L.push(
    `Seeded with SQL (valid log: message.created events + current-state rows, seqs from last_seq, in ${st.seed.seconds.toFixed(1)} s): ` +
      `${n0(st.seed.perThread)} messages in each of the ${n0(st.threads)} threads, ${n0(st.seed.smallThread)} in the small thread, ` +
      `${n0(st.seed.bigThread)} in the big one.`,
  );
  L.push('');
  if (r.framework.length > 0) {
    L.push(
      `**Framework ceiling**, same run, same load generator, connections and duration (no database, \`GET /\` → \`{"status":"ok"}\`):`,
    );
    L.push('');
    L.push('| server | req/s | p50 ms | p99 ms | errors | load generator CPU |');
    L.push('| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const f of r.framework)
      L.push(
        `| ${f.name}${f.name === FRAMEWORK_CEILING ? ' (the ceiling the ratios use)' : ''} | ${n0(f.requestsPerSecond)} | ${ms(f.p50)} | ${ms(f.p99)} | ${n0(f.errors)} | ${pct(f.loadGeneratorCpu)} |`,
      );
    L.push('');
  }
  L.push(
    '| scenario | req/s | messages/s | p50 ms | p99 ms | × express | × PostgreSQL ceiling | CPU: load gen. / service / PostgreSQL | errors | correctness |',
  );
  L.push('| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |');
  for (const s of r.scenarios) {
    const v = s.verification;
    const check = v
      ? v.ok
        ? `OK: ${v.acknowledgedMessages === null ? 'acks not counted' : `${n0(v.acknowledgedMessages)} acked`}, ${n0(v.storedMessages)} stored; ${n0(v.threadsChecked)} threads gapless`
        : `**FAILED** ${JSON.stringify(v)}`
      : '—';
    const pr = pgRatio(r, s);
    L.push(
      `| ${s.name}: ${s.title}${s.overallRate ? ` (paced at ${n0(s.overallRate)}/s)` : ''} | ${n0(s.requestsPerSecond)} | ${s.messagesPerSecond > 0 ? n0(s.messagesPerSecond) : '—'} | ` +
        `${ms(s.latency.p50)} | ${ms(s.latency.p99)} | ${times(frameworkRatio(r, s))} | ${pr ? `${times(pr.ratio)} of ${pr.label}` : '—'} | ` +
        `${pct(s.cpu.loadGenerator)} / ${pct(s.cpu.service)} / ${pct(s.cpu.postgres)} | ${n0(s.errors)} | ${check} |`,
    );
  }
  L.push('');
  L.push(
    "CPU columns: each party's CPU seconds over the scenario's wall time × `nproc` (100 % = every core). The load generator is the wrk process (`/proc/<pid>/stat` utime+stime), or the harness process for the paced scenario; " +
      'the service is its process tree; PostgreSQL is every `postgres` process on the machine.',
  );
  L.push('');
  if (r.ceiling.length > 0) {
    L.push(
      `**PostgreSQL ceiling**, same run (\`${st.ceilingScript ?? '../shared/bench/pg-ceiling/run.sh'} ${st.ceilingSeconds}\`, pgbench, no HTTP):`,
    );
    L.push('');
    L.push('| pgbench scenario | clients | tx/s | rows/s |');
    L.push('| --- | ---: | ---: | ---: |');
    for (const c of r.ceiling)
      L.push(`| ${c.scenario} | ${c.clients} | ${n0(c.txPerSecond)} | ${n0(c.rowsPerSecond)} |`);
    L.push('');
  } else {
    L.push('PostgreSQL ceiling: not run (BENCH_CEILING_SECONDS=0, embedded PostgreSQL, or the script was not found).');
    L.push('');
  }
  L.push('**Targets** (issue 11; ratios to the ceilings of this same run):');
  L.push('');
  L.push('| scenario | target | this run | met |');
  L.push('| --- | --- | --- | --- |');
  for (const t of checkTargets(r))
    L.push(`| ${t.scenario} | ${t.target} | ${t.figure} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`);
  L.push('');
  if (r.workersComparison.length > 1) {
    L.push('Worker processes (WEB_CONCURRENCY), same run, same loads:');
    L.push('');
    L.push('| workers | append-spread req/s | read-latest-50 req/s |');
    L.push('| ---: | ---: | ---: |');
    for (const w of r.workersComparison) L.push(`| ${w.workers} | ${n0(w.appendRps)} | ${n0(w.readRps)} |`);
    L.push('');
  }
  if (r.serverComparison && r.serverComparison.length > 0) {
    L.push(
      'Compiled JavaScript (`node dist/src/server.js`, esbuild per file) vs the tsx loader (`tsx src/server.ts`), same run, same loads:',
    );
    L.push('');
    L.push('| scenario | tsx req/s | compiled req/s | compiled / tsx |');
    L.push('| --- | ---: | ---: | ---: |');
    for (const c of r.serverComparison)
      L.push(`| ${c.scenario} | ${n0(c.tsx)} | ${n0(c.compiled)} | ${times(c.tsx ? c.compiled / c.tsx : null)} |`);
    L.push('');
  }
  L.push('![Throughput as a share of the framework ceiling](bench/results/throughput.svg)');
  L.push('');
  L.push('![Latency percentiles per scenario](bench/results/latency.svg)');
  L.push('');
  L.push(
    'Raw figures: `bench/results/latest.json`; `npm run bench:docs` regenerates this section and both charts from it.',
  );
  return L.join('\n') + '\n';
}

export const START = '<!-- bench:main:start -->';
export const END = '<!-- bench:main:end -->';
export const HEADING = '## Read and write path (`npm run bench`)';
const OLD_HEADING = '## Throughput and latency (`npm run bench`)';

/** Replaces only the text between the markers (and renames the old heading); adds the section if missing. */
export function updateBenchmarksMd(file: string, generated: string) {
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  text = text.replace(OLD_HEADING, HEADING);
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  let next: string;
  if (a >= 0 && b > a) {
    next = text.slice(0, a + START.length) + '\n' + generated + text.slice(b);
  } else {
    const section = `${HEADING}\n\n${START}\n${generated}${END}\n\n`;
    const h = text.indexOf('\n## ');
    next = h >= 0 ? text.slice(0, h + 1) + section + text.slice(h + 1) : text.trimEnd() + '\n\n' + section;
  }
  writeFileSync(file, next);
}

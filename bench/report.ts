import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { CeilingRow } from './pg-ceiling';

export interface ScenarioResult {
  name: string;
  title: string;
  connections: number;
  seconds: number;
  overallRate: number | null;
  requestsPerSecond: number;
  messagesPerSecond: number;
  readsPerSecond: number;
  latency: { p50: number; p75: number; p90: number; p97_5: number; p99: number; p99_9: number; max: number };
  errors: number;
  non2xx: number;
  statuses: Record<string, number>;
  /** Mean writes per group-commit transaction and its duration, from the workers' /metrics. */
  groups?: { meanSize: number; meanCommitMs: number } | null;
  verification: Verification | null;
}

/** What the harness checks in the database after a write scenario. */
export interface Verification {
  ok: boolean;
  threadsChecked: number;
  acknowledged: number;
  storedOfAcknowledged: number;
  duplicateAcks: number;
  gapViolations: number;
  storedUnacknowledged: number;
}

export interface Report {
  when: string;
  command: string;
  settings: {
    seconds: number;
    connections: number;
    workers: number;
    rateLimiter: boolean;
    ceilingSeconds: number;
    threads: number;
    batch: number;
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
  scenarios: ScenarioResult[];
  ceiling: CeilingRow[];
  /** Append (spread) and read req/s with each WEB_CONCURRENCY tried. */
  workersComparison: Array<{ workers: number; appendRps: number; readRps: number }>;
}

const n0 = (x: number) => Math.round(x).toLocaleString('en-US');
const ms = (x: number) => (x < 10 ? x.toFixed(1) : x.toFixed(0));
const ratio = (a: number, b: number | undefined) => (b ? `${(a / b).toFixed(2)}×` : 'n/a');

export interface TargetCheck {
  target: string;
  figure: string;
  met: boolean | null;
}

export function checkTargets(r: Report): TargetCheck[] {
  const s = (name: string) => r.scenarios.find((x) => x.name === name);
  const c = (name: string) => r.ceiling.find((x) => x.scenario === name);
  const out: TargetCheck[] = [];
  const spread = s('append-spread');
  if (spread)
    out.push({
      target: 'single-message appends over 1,000 threads ≥ 5,000/s',
      figure: `${n0(spread.messagesPerSecond)}/s`,
      met: spread.messagesPerSecond >= 5000,
    });
  const hot = s('append-hot');
  const hotCeiling = c('hot-thread');
  if (hot) {
    out.push({
      target: "one hot thread ≥ 3× the ceiling's one-per-transaction hot-thread figure",
      figure: hotCeiling
        ? `${n0(hot.messagesPerSecond)}/s = ${ratio(hot.messagesPerSecond, hotCeiling.txPerSecond)} of ${n0(hotCeiling.txPerSecond)} tx/s`
        : `${n0(hot.messagesPerSecond)}/s (no ceiling)`,
      met: hotCeiling ? hot.messagesPerSecond >= 3 * hotCeiling.txPerSecond : null,
    });
  }
  const batch = s('append-batch');
  if (batch)
    out.push({
      target: 'batch appends ≥ 30,000 messages/s',
      figure: `${n0(batch.messagesPerSecond)}/s`,
      met: batch.messagesPerSecond >= 30000,
    });
  const read = s('read-latest-50');
  if (read)
    out.push({
      target: 'latest-50 reads ≥ 5,000/s',
      figure: `${n0(read.requestsPerSecond)}/s`,
      met: read.requestsPerSecond >= 5000,
    });
  const half = s('append-spread-half-rate');
  if (half)
    out.push({
      target: 'append p99 ≤ 20 ms at half the maximum rate',
      figure: `p99 ${ms(half.latency.p99)} ms at ${n0(half.requestsPerSecond)} req/s`,
      met: half.latency.p99 <= 20,
    });
  const checks = r.scenarios.filter((x) => x.verification);
  out.push({
    target: 'after each write scenario: seqs gapless, every acknowledged message stored exactly once',
    figure: checks.map((x) => `${x.name} ${x.verification!.ok ? 'OK' : 'FAILED'}`).join(', '),
    met: checks.every((x) => x.verification!.ok),
  });
  return out;
}

/** The generated part of BENCHMARKS.md (also bench/results/latest.md). */
export function renderMarkdown(r: Report): string {
  const L: string[] = [];
  // The run itself loads the machine (server, PostgreSQL, autocannon), so only the load before
  // it started says whether something else was running.
  const busy = r.machine.loadAverageAtStart[0] > r.machine.nproc * 0.5;
  L.push(
    `Run ${r.when.replace('T', ' ').slice(0, 16)} UTC — \`${r.command}\` (BENCH_SECONDS=${r.settings.seconds}, ${r.settings.connections} connections, closed loop).`,
  );
  L.push('');
  L.push(
    `Machine: \`nproc\` = ${r.machine.nproc} (${r.machine.cpu}), Node ${r.machine.node}, PostgreSQL ${r.machine.postgres} (${r.machine.database}); ` +
      `database, service (${r.settings.workers} worker${r.settings.workers > 1 ? 's' : ''}, WEB_CONCURRENCY) and load generator (autocannon, one process) all on it. ` +
      `Rate limiter ${r.settings.rateLimiter ? 'on' : 'off'}. Load average ${r.machine.loadAverageAtStart[0]} at the start, ${r.machine.loadAverageAtEnd[0]} at the end` +
      (busy ? ' — **the machine was busy with other work during this run: figures are low and noisy.**' : '.'),
  );
  L.push('');
  L.push(
    '| scenario | req/s | messages/s | p50 ms | p99 ms | max ms | errors | writes per group (commit ms) | correctness |',
  );
  L.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const s of r.scenarios) {
    const v = s.verification;
    const check = v
      ? v.ok
        ? `OK: ${n0(v.acknowledged)} acked, stored once; ${n0(v.threadsChecked)} threads gapless`
        : `**FAILED** ${JSON.stringify(v)}`
      : '—';
    const msgs =
      s.messagesPerSecond > 0
        ? n0(s.messagesPerSecond)
        : s.readsPerSecond > 0
          ? `${n0(s.readsPerSecond * 50)} read`
          : '—';
    const g = s.groups ? `${s.groups.meanSize.toFixed(1)} (${s.groups.meanCommitMs.toFixed(1)})` : '—';
    L.push(
      `| ${s.name}: ${s.title} | ${n0(s.requestsPerSecond)} | ${msgs} | ${ms(s.latency.p50)} | ${ms(s.latency.p99)} | ${ms(s.latency.max)} | ${n0(s.errors)} | ${g} | ${check} |`,
    );
  }
  L.push('');
  if (r.ceiling.length > 0) {
    L.push(
      `PostgreSQL ceiling, same run (\`../shared/bench/pg-ceiling/run.sh ${r.settings.ceilingSeconds}\`, pgbench, no HTTP):`,
    );
    L.push('');
    L.push('| pgbench scenario | clients | tx/s | rows/s |');
    L.push('| --- | ---: | ---: | ---: |');
    for (const c of r.ceiling)
      L.push(`| ${c.scenario} | ${c.clients} | ${n0(c.txPerSecond)} | ${n0(c.rowsPerSecond)} |`);
    L.push('');
    const s = (name: string) => r.scenarios.find((x) => x.name === name);
    const c = (name: string) => r.ceiling.find((x) => x.scenario === name);
    const rows: Array<[string, number | undefined, string, number | undefined]> = [
      [
        'append-spread messages/s',
        s('append-spread')?.messagesPerSecond,
        'spread tx/s (1 message per transaction)',
        c('spread')?.txPerSecond,
      ],
      [
        'append-spread messages/s',
        s('append-spread')?.messagesPerSecond,
        'spread+notify tx/s',
        c('spread+notify')?.txPerSecond,
      ],
      [
        'append-spread messages/s',
        s('append-spread')?.messagesPerSecond,
        'spread-batch50+notify rows/s (the batched figure)',
        c('spread-batch50+notify')?.rowsPerSecond,
      ],
      ['append-hot messages/s', s('append-hot')?.messagesPerSecond, 'hot-thread tx/s', c('hot-thread')?.txPerSecond],
      [
        'append-hot messages/s',
        s('append-hot')?.messagesPerSecond,
        'hot-thread-batch50 rows/s',
        c('hot-thread-batch50')?.rowsPerSecond,
      ],
      [
        'append-batch messages/s',
        s('append-batch')?.messagesPerSecond,
        'spread-batch50+notify rows/s',
        c('spread-batch50+notify')?.rowsPerSecond,
      ],
      [
        'read-latest-50 req/s',
        s('read-latest-50')?.requestsPerSecond,
        'read-latest-50 tx/s',
        c('read-latest-50')?.txPerSecond,
      ],
    ];
    L.push('| ours (through HTTP) | | ceiling (PostgreSQL alone) | | ratio |');
    L.push('| --- | ---: | --- | ---: | ---: |');
    for (const [a, av, b, bv] of rows)
      if (av !== undefined)
        L.push(
          `| ${a} | ${n0(av)} | ${b} | ${bv === undefined ? 'n/a' : n0(bv)} | ${av !== undefined ? ratio(av, bv) : 'n/a'} |`,
        );
    L.push('');
  } else {
    L.push('PostgreSQL ceiling: not run (BENCH_CEILING_SECONDS=0 or embedded PostgreSQL).');
    L.push('');
  }
  if (r.workersComparison.length > 1) {
    L.push('Worker processes (WEB_CONCURRENCY), same run, same loads:');
    L.push('');
    L.push('| workers | append-spread req/s | read-latest-50 req/s |');
    L.push('| ---: | ---: | ---: |');
    for (const w of r.workersComparison) L.push(`| ${w.workers} | ${n0(w.appendRps)} | ${n0(w.readRps)} |`);
    L.push('');
  }
  L.push('| target | this run | met |');
  L.push('| --- | --- | --- |');
  for (const t of checkTargets(r))
    L.push(`| ${t.target} | ${t.figure} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`);
  L.push('');
  L.push('![Latency percentiles per scenario](bench/results/latency.svg)');
  L.push('');
  L.push('Raw figures: `bench/results/latest.json`.');
  return L.join('\n') + '\n';
}

export const START = '<!-- bench:main:start -->';
export const END = '<!-- bench:main:end -->';

/** Replaces only the text between the markers; adds a section with them if they are missing. */
export function updateBenchmarksMd(file: string, generated: string) {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  let next: string;
  if (a >= 0 && b > a) {
    next = text.slice(0, a + START.length) + '\n' + generated + text.slice(b);
  } else {
    const section = `## Throughput and latency (\`npm run bench\`)\n\n${START}\n${generated}${END}\n\n`;
    const h = text.indexOf('\n## ');
    next = h >= 0 ? text.slice(0, h + 1) + section + text.slice(h + 1) : text.trimEnd() + '\n\n' + section;
  }
  writeFileSync(file, next);
}

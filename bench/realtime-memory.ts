/**
 * Server memory per idle WebSocket connection.
 *
 *   npx tsx bench/realtime-memory.ts [--connections 5000] [--threads 100] [--by-constructor]
 *   (`npm run bench:realtime` runs the latency and the memory benchmark with their defaults)
 *
 * One server (src/server.ts child process, with the inspector on loopback so the benchmark can
 * force a full garbage collection and read process.memoryUsage(); nothing is added to the server
 * itself). When warmed up and idle it measures the resident set size (VmRSS, /proc, median of five
 * samples a second apart) as it settles by itself, then forces a full GC and measures RSS and the
 * V8 heap used; then it opens `connections` WebSockets (authenticated with headers), each
 * subscribed to one of `threads` threads and then left idle, and measures all three again the
 * same way. Reports the differences per connection: RSS as it settles (the figure measured
 * before the GC rows were added: garbage not yet collected and heap slack included, so it
 * depends on when V8 last collected — 1.0 to 4.8 KiB on the same code in one afternoon's runs),
 * RSS after a full GC (what the idle sockets themselves cost the machine: heap, native TCP
 * handles, allocator slack), and heap used after a full GC (the JavaScript objects alone). The
 * server is warmed up first with one batch of sockets (opened, sent an event, closed), so code
 * compiled on the way is not counted per connection.
 * --by-constructor also takes a heap snapshot at both points and lists what grew, per
 * connection, by constructor (self sizes): where the bytes of an idle socket go. The snapshots
 * cost the server memory of their own, so the RSS rows of such a run mean little. DATABASE_URL
 * names a PostgreSQL server; without it an embedded one is started. Loopback only.
 */
import { availableParallelism, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type WebSocket from 'ws';
import { inspector, request, rssBytes, scratchDatabase, startServer, subscribedSocket } from './common';

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '5000' },
    threads: { type: 'string', default: '100' },
    'by-constructor': { type: 'boolean', default: false },
  },
});
const connections = Number(args.connections);
const threads = Number(args.threads);

/** The median of five RSS samples, a second apart. */
async function medianRss(pid: number) {
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    await sleep(1_000);
    xs.push(rssBytes(pid));
  }
  return xs.sort((a, b) => a - b)[2];
}

/** RSS as it settles by itself, then RSS and heap used after a full GC. */
async function settled(pid: number, server: Awaited<ReturnType<typeof inspector>>) {
  const rss = await medianRss(pid);
  await server.gc();
  const rssGc = await medianRss(pid);
  await server.gc();
  const { heapUsed } = await server.memoryUsage();
  return { rss, rssGc, heapUsed };
}

type Census = Map<string, { count: number; bytes: number }>;

/** Objects of a heap snapshot by type and constructor: how many, and their self sizes. */
function census(snapshot: string): Census {
  const {
    snapshot: meta,
    nodes,
    strings,
  } = JSON.parse(snapshot) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = meta.meta.node_fields;
  const types = meta.meta.node_types[0];
  const [type, name, size] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const byKind: Census = new Map();
  for (let i = 0; i < nodes.length; i += fields.length) {
    const t = types[nodes[i + type]];
    // Strings, numbers and code are named by their content: count them by type alone.
    const kind = /string|number|code/.test(t) ? t : `${t} ${strings[nodes[i + name]].slice(0, 60)}`;
    const c = byKind.get(kind) ?? { count: 0, bytes: 0 };
    c.count++;
    c.bytes += nodes[i + size];
    byKind.set(kind, c);
  }
  return byKind;
}

/** What grew from `before` to `after`, per connection, largest first (8 bytes or more). */
function growth(before: Census, after: Census) {
  const rows = [...after].map(([kind, a]) => {
    const b = before.get(kind) ?? { count: 0, bytes: 0 };
    return { kind, count: (a.count - b.count) / connections, bytes: (a.bytes - b.bytes) / connections };
  });
  return [
    '| type and constructor | objects per connection | bytes per connection |',
    '| --- | ---: | ---: |',
    ...rows
      .filter((r) => Math.abs(r.bytes) >= 8)
      .sort((x, y) => y.bytes - x.bytes)
      .map((r) => `| ${r.kind.replace(/\|/g, '\\|')} | ${r.count.toFixed(2)} | ${r.bytes.toFixed(0)} |`),
    `| all | | ${rows.reduce((sum, r) => sum + r.bytes, 0).toFixed(0)} |`,
    // Compiled code comes and goes (compiled while sockets open, flushed when idle): not per socket.
    `| all but code | | ${rows
      .filter((r) => r.kind !== 'code')
      .reduce((sum, r) => sum + r.bytes, 0)
      .toFixed(0)} |`,
  ];
}

async function main() {
  const database = await scratchDatabase('rt_memory');
  // Heartbeats every 25 s (the default) would not fire during the run anyway.
  const server = await startServer(database.url, {}, { inspect: true });
  const sockets: WebSocket[] = [];
  try {
    const key = database.secretKey;
    const threadIds = Array.from({ length: threads }, (_, i) => `idle-${i}`);
    for (const id of threadIds) await request(server.url, key, 'POST', '/v1/threads', { id, type: 'channel' });
    // Warm up every code path (subscribe, event, close) before the baseline, with as many sockets
    // as one batch below: the code V8 compiles and optimizes meanwhile is paid once, not per
    // connection (with 10 warm-up sockets it was some 1 MiB, 0.2 KiB of the 5,000 sockets' figure).
    const warm = await Promise.all(
      Array.from({ length: 250 }, (_, i) => subscribedSocket(server.url, key, threadIds[i % threads])),
    );
    await request(server.url, key, 'POST', `/v1/threads/${threadIds[0]}/messages`, { body: { text: 'warm' } });
    await sleep(500);
    for (const ws of warm) ws.close();
    const pid = server.child.pid!;
    const v8 = await inspector(server);
    const before = await settled(pid, v8);
    const censusBefore = args['by-constructor'] ? census(await v8.heapSnapshot()) : null;

    const t0 = Date.now();
    for (let i = 0; i < connections; i += 250) {
      const batch = Array.from({ length: Math.min(250, connections - i) }, (_, j) =>
        subscribedSocket(server.url, key, threadIds[(i + j) % threads]),
      );
      sockets.push(...(await Promise.all(batch)));
    }
    const openSeconds = (Date.now() - t0) / 1000;
    const after = await settled(pid, v8);
    const byConstructor = censusBefore ? ['', ...growth(censusBefore, census(await v8.heapSnapshot()))] : [];
    v8.close();
    const mib = (b: number) => (b / 1024 / 1024).toFixed(1);
    const kib = (b: number) => (b / connections / 1024).toFixed(2);
    process.stdout.write(
      [
        '',
        `realtime memory: nproc=${availableParallelism()}, load average ${loadavg()
          .map((l) => l.toFixed(2))
          .join(
            ' ',
          )}, node ${process.version}, ${database.embedded ? 'embedded PostgreSQL' : 'DATABASE_URL PostgreSQL'}`,
        `${sockets.length} WebSockets, each subscribed to one of ${threads} threads, opened in ${openSeconds.toFixed(1)} s, then idle`,
        '',
        '| server | idle | with connections | difference | per connection |',
        '| --- | ---: | ---: | ---: | ---: |',
        ...(
          [
            ['RSS', 'rss'],
            ['RSS after a full GC', 'rssGc'],
            ['V8 heap used after a full GC', 'heapUsed'],
          ] as const
        ).map(
          ([label, k]) =>
            `| ${label} | ${mib(before[k])} MiB | ${mib(after[k])} MiB | ${mib(after[k] - before[k])} MiB | ${kib(after[k] - before[k])} KiB |`,
        ),
        ...byConstructor,
        '',
      ].join('\n'),
    );
  } finally {
    for (const ws of sockets) ws.terminate();
    await server.stop();
    await database.drop();
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});

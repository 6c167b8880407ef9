import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** Where a frame's code lives: a package, node internals, or our source. */
function bucket(url: string): string {
  if (!url) return '(native / GC / idle)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 13).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const src = url.indexOf('/src/');
  return src >= 0 ? `src/${url.slice(src + 5)}` : url;
}

/** Self time by package/file and the hottest functions, over every .cpuprofile given. */
export function summarizeProfiles(files: string[]): string {
  const byBucket = new Map<string, number>();
  const byFunction = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  for (const f of files) {
    const p = JSON.parse(readFileSync(f, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    p.samples.forEach((id, i) => {
      const n = nodes.get(id)!;
      const dt = p.timeDeltas[i] ?? 0;
      const fn = n.callFrame.functionName || '(anonymous)';
      if (fn === '(idle)' || fn === '(program)') return;
      total += dt;
      const b = fn === '(garbage collector)' ? '(garbage collector)' : bucket(n.callFrame.url);
      byBucket.set(b, (byBucket.get(b) ?? 0) + dt);
      const key = `${fn} ${n.callFrame.url ? `${path.basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : ''} [${b}]`;
      byFunction.set(key, (byFunction.get(key) ?? 0) + dt);
      // Inclusive: every package/file on the stack once, so a middleware's callees count for it.
      const seen = new Set<string>();
      for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
        const f = nodes.get(cur)!.callFrame;
        if (f.url) seen.add(bucket(f.url));
      }
      for (const x of seen) inclusive.set(x, (inclusive.get(x) ?? 0) + dt);
    });
  }
  const top = (m: Map<string, number>, k: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([name, us]) => `  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${name}`)
      .join('\n');
  return (
    `${files.length} profile(s), ${(total / 1e6).toFixed(1)} s of busy CPU (idle excluded)\n` +
    `Self time by package / file:\n${top(byBucket, 20)}\n` +
    `Inclusive time by package / file (on the stack):\n${top(inclusive, 30)}\n` +
    `Hottest functions (self time):\n${top(byFunction, 25)}\n`
  );
}

/** CPU time of processes, from /proc (Linux): the service's process tree and PostgreSQL's backends. */
import { readdirSync, readFileSync } from 'node:fs';
import { clockTicksPerSecond } from './wrk';

function statTicks(pid: number | string): { ticks: number; comm: string } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { ticks: Number(f[14 - 3]) + Number(f[15 - 3]), comm };
  } catch {
    return null;
  }
}

function children(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const c = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (c) out.push(...c.split(' ').map(Number));
    }
  } catch {
    // gone, or /proc/…/children unsupported
  }
  return out;
}

/** CPU seconds used so far by a process and its live descendants (e.g. cluster workers). */
export function treeCpuSeconds(pid: number): number {
  let ticks = 0;
  const todo = [pid];
  while (todo.length > 0) {
    const p = todo.pop()!;
    ticks += statTicks(p)?.ticks ?? 0;
    todo.push(...children(p));
  }
  return ticks / clockTicksPerSecond();
}

/** Per-pid CPU seconds of every process named `postgres` on the machine (all databases, all users). */
export function postgresCpu(): Map<string, number> {
  const out = new Map<string, number>();
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    const s = statTicks(pid);
    if (s && s.comm === 'postgres') out.set(pid, s.ticks / clockTicksPerSecond());
  }
  return out;
}

/** CPU seconds PostgreSQL used between two samples (backends that exited in between are lost; new ones count whole). */
export function postgresDelta(a: Map<string, number>, b: Map<string, number>): number {
  let sum = 0;
  for (const [pid, t] of b) sum += t - (a.get(pid) ?? 0);
  return sum;
}

import { spawn } from 'node:child_process';

export interface CeilingRow {
  scenario: string;
  clients: number;
  txPerSecond: number;
  rowsPerSecond: number;
}

/** Runs the shared pgbench ceiling script and parses its Markdown table. */
export function runCeiling(
  script: string,
  pgurl: string,
  seconds: number,
  onLine: (line: string) => void,
): Promise<CeilingRow[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [script, String(seconds)], {
      env: { ...process.env, PGURL: pgurl },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const rows: CeilingRow[] = [];
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        const cells = line
          .split('|')
          .map((c) => c.trim())
          .filter(Boolean);
        if (cells.length === 4 && /^\d/.test(cells[1]) && /^[\d.]+$/.test(cells[2])) {
          rows.push({
            scenario: cells[0],
            clients: Number(cells[1]),
            txPerSecond: Number(cells[2]),
            rowsPerSecond: Number(cells[3]),
          });
          onLine(`${cells[0]}: ${cells[2]} tx/s, ${cells[3]} rows/s (${cells[1]} clients)`);
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(rows)
        : reject(new Error(`pg-ceiling run.sh exited with ${code}: ${err.trim().slice(-500)}`)),
    );
  });
}

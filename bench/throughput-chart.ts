import { frameworkCeiling, type Report } from './report';

const TARGETS: Record<string, number> = {
  'read-latest-50': 0.5,
  'read-latest-50-pk': 0.4,
  'append-spread': 0.4,
  'append-pk': 0.35,
};
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/**
 * Each scenario's req/s as a share of bare express's empty route (same run), as horizontal bars,
 * with the target marked where there is one: a self-contained SVG like latency.svg
 * (chart.js needs a canvas, which Node does not have without a native module).
 */
export function renderThroughputSvg(r: Report): string {
  const ceiling = frameworkCeiling(r);
  const rows = [
    ...r.framework.map((f) => ({ name: f.name, rps: f.requestsPerSecond, ceiling: true })),
    ...r.scenarios.map((s) => ({ name: s.name, rps: s.requestsPerSecond, ceiling: false })),
  ];
  const W = 760;
  const bar = 20;
  const m = { l: 200, r: 110, t: 44, b: 36 };
  const H = m.t + m.b + rows.length * (bar + 8);
  const pw = W - m.l - m.r;
  const ratios = rows.map((x) => (ceiling ? x.rps / ceiling : 0));
  const hi = Math.max(1, Math.ceil(Math.max(...ratios, 0) * 2) / 2);
  const x = (v: number) => m.l + (Math.min(v, hi) / hi) * pw;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(
    `<text x="${m.l}" y="22" font-size="15" font-weight="bold">req/s as a share of bare express 5 (${ceiling ? Math.round(ceiling).toLocaleString('en-US') : 'n/a'} req/s, same run)</text>`,
  );
  for (let v = 0; v <= hi + 1e-9; v += hi > 2 ? 0.5 : 0.25) {
    out.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${m.t - 6}" y2="${H - m.b}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${x(v)}" y="${H - m.b + 16}" text-anchor="middle">${v.toFixed(2)}×</text>`);
  }
  rows.forEach((row, i) => {
    const y = m.t + i * (bar + 8);
    const ratio = ratios[i];
    const target = TARGETS[row.name];
    const color = row.ceiling ? '#999' : target === undefined ? '#1f77b4' : ratio >= target ? '#2ca02c' : '#d62728';
    out.push(`<text x="${m.l - 8}" y="${y + bar / 2 + 4}" text-anchor="end">${esc(row.name)}</text>`);
    out.push(
      `<rect x="${m.l}" y="${y}" width="${Math.max(1, x(ratio) - m.l).toFixed(1)}" height="${bar}" fill="${color}"><title>${esc(row.name)}: ${Math.round(row.rps)} req/s</title></rect>`,
    );
    out.push(
      `<text x="${(x(ratio) + 6).toFixed(1)}" y="${y + bar / 2 + 4}">${ratio.toFixed(2)}× · ${Math.round(row.rps).toLocaleString('en-US')}/s</text>`,
    );
    if (target !== undefined)
      out.push(
        `<line x1="${x(target)}" x2="${x(target)}" y1="${y - 2}" y2="${y + bar + 2}" stroke="#000" stroke-width="2" stroke-dasharray="3,2"><title>target ${target}×</title></line>`,
      );
  });
  out.push(
    `<text x="${m.l}" y="${H - 6}" fill="#555" font-size="11">grey: framework ceilings; green/red: met/missed the issue's target (dashed line); blue: no target</text>`,
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}

import type { ScenarioResult } from './report';

const POINTS: Array<[keyof ScenarioResult['latency'], string]> = [
  ['p50', 'p50'],
  ['p75', 'p75'],
  ['p90', 'p90'],
  ['p97_5', 'p97.5'],
  ['p99', 'p99'],
  ['p99_9', 'p99.9'],
  ['max', 'max'],
];
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** Latency percentiles of each scenario as lines on a log scale: a self-contained SVG. */
export function renderLatencySvg(scenarios: ScenarioResult[]): string {
  const W = 760;
  const H = 420;
  const m = { l: 60, r: 250, t: 40, b: 50 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const values = scenarios.flatMap((s) => POINTS.map(([k]) => Math.max(0.1, s.latency[k])));
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values, 1))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values, 10))));
  const y = (v: number) =>
    m.t + ph - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * ph;
  const x = (i: number) => m.l + (i / (POINTS.length - 1)) * pw;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text x="${m.l}" y="22" font-size="15" font-weight="bold">Latency by percentile (ms, log scale)</text>`);
  for (let d = lo; d <= hi; d *= 10) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y(d)}" y2="${y(d)}" stroke="#ddd"/>`);
    out.push(`<text x="${m.l - 8}" y="${y(d) + 4}" text-anchor="end">${d >= 1 ? d : d.toFixed(1)}</text>`);
  }
  POINTS.forEach(([, label], i) => {
    out.push(`<line x1="${x(i)}" x2="${x(i)}" y1="${m.t}" y2="${m.t + ph}" stroke="#eee"/>`);
    out.push(`<text x="${x(i)}" y="${m.t + ph + 20}" text-anchor="middle">${label}</text>`);
  });
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  scenarios.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    const pts = POINTS.map(([key], i) => `${x(i).toFixed(1)},${y(s.latency[key]).toFixed(1)}`);
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(' ')}"/>`);
    POINTS.forEach(([key], i) =>
      out.push(
        `<circle cx="${x(i).toFixed(1)}" cy="${y(s.latency[key]).toFixed(1)}" r="3" fill="${color}"><title>${esc(s.name)} ${key}: ${s.latency[key]} ms</title></circle>`,
      ),
    );
    const ly = m.t + 10 + k * 36;
    out.push(
      `<line x1="${m.l + pw + 16}" x2="${m.l + pw + 40}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="3"/>`,
    );
    out.push(`<text x="${m.l + pw + 46}" y="${ly + 4}">${esc(s.name)}</text>`);
    out.push(
      `<text x="${m.l + pw + 46}" y="${ly + 18}" fill="#555" font-size="11">${Math.round(s.requestsPerSecond).toLocaleString('en-US')} req/s, p99 ${s.latency.p99} ms</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

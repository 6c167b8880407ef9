/**
 * `npm run bench:docs`: re-renders BENCHMARKS.md's "Read and write path" section, bench/results/
 * latest.md and both charts from bench/results/latest.json (or the JSON given as an argument),
 * so one quiet `npm run bench` run can be turned into the document again without re-running it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { renderLatencySvg } from './latency-chart';
import { renderMarkdown, updateBenchmarksMd, type Report } from './report';
import { renderThroughputSvg } from './throughput-chart';

const root = path.resolve(__dirname, '..');

/** Writes latest.md and the charts next to the JSON, and (unless told not to) BENCHMARKS.md's section. */
export function writeReport(report: Report, resultsDir: string, docs: string | null): string {
  const md = renderMarkdown(report);
  writeFileSync(path.join(resultsDir, 'latest.md'), md);
  writeFileSync(path.join(resultsDir, 'latency.svg'), renderLatencySvg(report.scenarios));
  writeFileSync(path.join(resultsDir, 'throughput.svg'), renderThroughputSvg(report));
  if (docs) updateBenchmarksMd(docs, md);
  return md;
}

if (require.main === module) {
  const file = path.resolve(process.argv[2] ?? path.join(root, 'bench', 'results', 'latest.json'));
  const report = JSON.parse(readFileSync(file, 'utf8')) as Report;
  if (!Array.isArray(report.framework)) {
    process.stderr.write(`${file} is from the older harness (no framework ceiling): run \`npm run bench\` again\n`);
    process.exit(1);
  }
  const docs = process.env.BENCH_WRITE_DOCS === '0' ? null : path.join(root, 'BENCHMARKS.md');
  writeReport(report, path.dirname(file), docs);
  process.stdout.write(
    `wrote ${path.relative(root, path.dirname(file))}/latest.md, latency.svg, throughput.svg${docs ? ' and BENCHMARKS.md' : ''} from ${path.relative(root, file)}\n`,
  );
}

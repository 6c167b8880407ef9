/**
 * A one-line progress bar on a terminal (redrawn at most every 100 ms); on anything else one
 * line per 10 % so logs stay readable.
 */
export function createProgressBar(out: NodeJS.WriteStream, label: string, total: number, unit: string) {
  let lastDraw = 0;
  let lastDecile = -1;
  const fmt = (n: number) => n.toLocaleString('en-US');
  const draw = (done: number, force: boolean) => {
    const ratio = total > 0 ? Math.min(1, done / total) : 1;
    if (out.isTTY) {
      const now = Date.now();
      if (!force && now - lastDraw < 100) return;
      lastDraw = now;
      const width = 30;
      const filled = Math.round(ratio * width);
      out.write(
        `\r${label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(ratio * 100).toFixed(0).padStart(3)}% ${fmt(done)}/${fmt(total)} ${unit}`,
      );
    } else {
      const decile = Math.floor(ratio * 10);
      if (decile === lastDecile && !force) return;
      lastDecile = decile;
      out.write(`${label}: ${(ratio * 100).toFixed(0)}% (${fmt(done)}/${fmt(total)} ${unit})\n`);
    }
  };
  return {
    update: (done: number) => draw(done, false),
    done(done: number) {
      draw(done, true);
      if (out.isTTY) out.write('\n');
    },
  };
}

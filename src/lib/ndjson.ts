import { AppError } from './errors';

/**
 * Splits a byte stream into lines (UTF-8, `\n` or `\r\n`), holding at most one line in memory;
 * a line longer than `maxLineBytes` is refused rather than buffered without bound.
 */
export async function* ndjsonLines(
  stream: AsyncIterable<Buffer | string>,
  maxLineBytes: number,
): AsyncGenerator<{ line: string; n: number }> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let n = 0;
  const take = (tail: Buffer) => {
    const buf = pending.length === 0 ? tail : Buffer.concat([...pending, tail]);
    pending = [];
    pendingBytes = 0;
    n++;
    return buf.toString('utf8').replace(/\r$/, '');
  };
  for await (const chunk of stream) {
    let buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    let i: number;
    while ((i = buf.indexOf(10)) !== -1) {
      if (pendingBytes + i > maxLineBytes) throw tooLong(n + 1, maxLineBytes);
      const line = take(buf.subarray(0, i));
      buf = buf.subarray(i + 1);
      if (line.trim() !== '') yield { line, n };
    }
    if (buf.length > 0) {
      pendingBytes += buf.length;
      if (pendingBytes > maxLineBytes) throw tooLong(n + 1, maxLineBytes);
      pending.push(Buffer.from(buf));
    }
  }
  if (pendingBytes > 0) {
    const line = take(Buffer.alloc(0));
    if (line.trim() !== '') yield { line, n };
  }
}

const tooLong = (n: number, max: number) =>
  new AppError('payload_too_large', `Line ${n} is longer than ${max} bytes; one line holds one thread or event.`);

import { randomFillSync } from 'node:crypto';
import { z } from './zod';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * CSPRNG bytes drawn from a pooled buffer, refilled 8 KiB at a time (as crypto.randomUUID does):
 * one randomFillSync per ~200 ids instead of one per id. Each byte is handed out once.
 */
const POOL = Buffer.allocUnsafe(8192);
let poolAt = POOL.length;

function randomByte(): number {
  if (poolAt === POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  return POOL[poolAt++];
}

/** `length` uniformly random base62 characters (rejection sampling, no modulo bias). */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    const byte = randomByte();
    if (byte < 248) out += BASE62[byte % 62];
  }
  return out;
}

export function toBase62(n: number, width: number): string {
  let out = '';
  let v = n >>> 0;
  do {
    out = BASE62[v % 62] + out;
    v = Math.floor(v / 62);
  } while (v > 0);
  return out.padStart(width, '0');
}

/** A generated id: a type prefix plus 20 base62 characters (~119 bits). */
export const newId = (prefix: string) => `${prefix}_${randomBase62(20)}`;

/** Client-chosen ids: 1–128 characters, starting with a letter or digit, then [A-Za-z0-9_:.-]. */
export const idSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_:.-]*$/,
    'must be 1–128 characters: letters, digits, "_", "-", ":", "." (starting with a letter or digit)',
  );

/** End-user ids chosen by the app: 1–128 printable ASCII characters without spaces. */
export const userIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21-\x7e]+$/, 'must be 1–128 printable ASCII characters without spaces');

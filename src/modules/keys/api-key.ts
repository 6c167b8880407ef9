import { createHash, hash, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { randomBase62, toBase62 } from '../../lib/ids';

import type { KeyKind } from '../../lib/key-kind';

export type { KeyKind };

export const KEY_PREFIX: Record<KeyKind, string> = { secret: 'sk_', publishable: 'pk_', admin: 'ak_' };

// 43 base62 characters carry 256 bits; the 6-character CRC32 suffix lets secret scanners
// (and our own parser) recognise a real key without a database lookup.
const BODY_LENGTH = 43;
const CHECKSUM_LENGTH = 6;
const KEY_PATTERN = /^(sk|pk|ak)_([0-9A-Za-z]{43})([0-9A-Za-z]{6})$/;
/** Every well-formed key's length: `sk_`, the body, the checksum. */
export const API_KEY_LENGTH = 3 + BODY_LENGTH + CHECKSUM_LENGTH;

const checksum = (text: string) => toBase62(crc32(text), CHECKSUM_LENGTH);

export function generateApiKey(kind: KeyKind): string {
  const head = KEY_PREFIX[kind] + randomBase62(BODY_LENGTH);
  return head + checksum(head);
}

/** The kind of a well-formed key with a valid checksum, or null. */
export function parseApiKey(key: string): KeyKind | null {
  const m = KEY_PATTERN.exec(key);
  if (!m) return null;
  const head = `${m[1]}_${m[2]}`;
  const expected = Buffer.from(checksum(head));
  const given = Buffer.from(m[3]);
  if (!timingSafeEqual(expected, given)) return null;
  return m[1] === 'sk' ? 'secret' : m[1] === 'pk' ? 'publishable' : 'admin';
}

/** Keys have 256 bits of entropy, so one SHA-256 is a sufficient, fast-to-check hash. */
export const hashApiKey = (key: string) => createHash('sha256').update(key).digest();

/**
 * The same hash as base64 text (the key caches' key), from the one-shot `crypto.hash`: no Hash
 * object per request. `Buffer.from(text, 'base64')` is `hashApiKey(key)`.
 */
export const apiKeyHashText = (key: string) => hash('sha256', key, 'base64');

/** What may be shown after creation: enough to recognise a key, never enough to use it. */
export const displayPrefix = (key: string) => key.slice(0, 11);

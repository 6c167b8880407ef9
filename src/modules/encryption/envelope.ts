import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * One encrypted value: `pdbenc:v1:<dek_id>:<base64url(nonce ‖ ciphertext ‖ tag)>`, AES-256-GCM
 * with a random 96-bit nonce. The plaintext is the value's JSON, so any JSON type round-trips.
 * The DEK id names the thread's data key; the key's row says which KEK version wraps it, so a
 * rotation (which rewraps the DEK) never touches ciphertexts.
 */
export const ENVELOPE_PREFIX = 'pdbenc:v1:';
const NONCE = 12;
const TAG = 16;

export const isEnvelope = (s: string) => s.startsWith(ENVELOPE_PREFIX);

/** The DEK id of an envelope, or null when it is malformed. */
export function envelopeKeyId(s: string): string | null {
  const end = s.indexOf(':', ENVELOPE_PREFIX.length);
  return end > ENVELOPE_PREFIX.length ? s.slice(ENVELOPE_PREFIX.length, end) : null;
}

/** What a ciphertext is bound to: moved to another project, thread, message, version or path, it fails. */
export function associatedData(
  projectId: string,
  threadId: string,
  messageId: string,
  version: number,
  at: string[],
): Buffer {
  return Buffer.from(JSON.stringify(['pdb-v1', projectId, threadId, messageId, version, at]));
}

export function sealValue(key: Buffer, dekId: string, aad: Buffer, value: unknown): string {
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(JSON.stringify(value) ?? 'null', 'utf8'), cipher.final()]);
  return `${ENVELOPE_PREFIX}${dekId}:${Buffer.concat([nonce, ct, cipher.getAuthTag()]).toString('base64url')}`;
}

export class IntegrityError extends Error {}

/** The value, or IntegrityError when the envelope was altered, moved or is malformed. */
export function openValue(key: Buffer, envelope: string, aad: Buffer): unknown {
  const dekId = envelopeKeyId(envelope);
  if (!dekId) throw new IntegrityError('malformed envelope');
  const raw = Buffer.from(envelope.slice(ENVELOPE_PREFIX.length + dekId.length + 1), 'base64url');
  if (raw.length < NONCE + TAG) throw new IntegrityError('truncated envelope');
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, NONCE));
    decipher.setAAD(aad);
    decipher.setAuthTag(raw.subarray(raw.length - TAG));
    const text = Buffer.concat([decipher.update(raw.subarray(NONCE, raw.length - TAG)), decipher.final()]);
    return JSON.parse(text.toString('utf8'));
  } catch {
    throw new IntegrityError('authentication failed');
  }
}

/** Key wrapping (KEK over DEK, master key over KEK): the same AEAD, bound to a context string. */
export function wrapKey(kek: Buffer, key: Buffer, context: string): string {
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce);
  cipher.setAAD(Buffer.from(context));
  const ct = Buffer.concat([cipher.update(key), cipher.final()]);
  return Buffer.concat([nonce, ct, cipher.getAuthTag()]).toString('base64url');
}

export function unwrapKey(kek: Buffer, wrapped: string, context: string): Buffer {
  const raw = Buffer.from(wrapped, 'base64url');
  if (raw.length < NONCE + TAG) throw new IntegrityError('truncated wrapped key');
  try {
    const decipher = createDecipheriv('aes-256-gcm', kek, raw.subarray(0, NONCE));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(raw.subarray(raw.length - TAG));
    return Buffer.concat([decipher.update(raw.subarray(NONCE, raw.length - TAG)), decipher.final()]);
  } catch {
    throw new IntegrityError('wrapped key failed authentication');
  }
}

import { createCipheriv, createDecipheriv, createHash, createHmac, createSecretKey, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Knex } from 'knex';
import { createServerSecretsStore } from '../auth/server-secrets-store';

const PREFIX = 'whsec_';

/** A Standard Webhooks secret: whsec_ + base64 of 24 random bytes (192 bits). */
export const newWebhookSecret = () => PREFIX + randomBytes(24).toString('base64');

/** The HMAC key of a whsec_ secret (its decoded bytes), decoded once and reused for every signature. */
export const signingKey = (secret: string): KeyObject =>
  createSecretKey(Buffer.from(secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret, 'base64'));

/** `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the secret's decoded bytes. */
export function signPayload(secret: string | KeyObject, id: string, timestamp: number, body: string): string {
  const key = typeof secret === 'string' ? signingKey(secret) : secret;
  return 'v1,' + createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
}

/**
 * Endpoint secrets at rest: AES-256-GCM under a server key, with the endpoint's project and id
 * as associated data (a ciphertext copied onto another endpoint does not decrypt).
 */
export function createSecretBox(key: Buffer) {
  const aad = (projectId: string, endpointId: string) => Buffer.from(`${projectId}\u0000${endpointId}`);
  return {
    seal(projectId: string, endpointId: string, plain: string): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(aad(projectId, endpointId));
      const ct = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
      return `v1.${iv.toString('base64url')}.${cipher.getAuthTag().toString('base64url')}.${ct.toString('base64url')}`;
    },
    open(projectId: string, endpointId: string, sealed: string): string {
      const [v, iv, tag, ct] = sealed.split('.');
      if (v !== 'v1' || !iv || !tag || ct === undefined) throw new Error('unreadable webhook secret');
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
      decipher.setAAD(aad(projectId, endpointId));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
    },
  };
}
export type SecretBox = ReturnType<typeof createSecretBox>;

/**
 * The key that encrypts endpoint secrets: WEBHOOK_SECRET_KEY when set (kept out of the
 * database), otherwise one generated key shared by every replica through server_secrets.
 */
export async function resolveWebhookKey(db: Knex, configured: string | undefined): Promise<Buffer> {
  const material =
    configured ??
    (await createServerSecretsStore().getOrCreate(db, 'webhook_secret_key', randomBytes(32).toString('base64url')));
  return createHash('sha256').update(material).digest();
}

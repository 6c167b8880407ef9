import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Config } from '../../config';
import type { Logger } from '../../lib/logger';
import { createServerSecretsStore } from './server-secrets-store';

const NAME = 'session_secret';

/**
 * The key that signs console sessions. SESSION_SECRET wins. Without it, tests get a random
 * key per process; every other environment shares one generated key through the database
 * (first replica to start writes it, the others read it), so sessions work on any replica and
 * survive restarts. Set SESSION_SECRET in production to keep the key out of the database.
 */
export async function resolveSessionSecret(deps: {
  db: Knex;
  config: Pick<Config, 'SESSION_SECRET' | 'NODE_ENV'>;
  logger: Logger;
}): Promise<string> {
  if (deps.config.SESSION_SECRET) return deps.config.SESSION_SECRET;
  if (deps.config.NODE_ENV === 'test') return randomBytes(48).toString('base64url');
  const value = await createServerSecretsStore().getOrCreate(deps.db, NAME, randomBytes(48).toString('base64url'));
  if (deps.config.NODE_ENV === 'production') {
    deps.logger.warn(
      'SESSION_SECRET is not set: console sessions are signed with a generated key stored in the database (shared by all replicas). Set SESSION_SECRET to keep it out of the database.',
    );
  }
  return value;
}

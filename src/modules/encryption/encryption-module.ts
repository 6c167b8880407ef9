import path from 'node:path';
import type { Knex } from 'knex';
import type { Config } from '../../config';
import { ConfigError } from '../../config';
import type { RouteFactory } from '../../lib/http/route';
import type { Logger } from '../../lib/logger';
import type { PgListener } from '../../lib/pg-listener';
import type { EventsStore } from '../events/events-store';
import type { LogIngest, ThreadLog } from '../thread-log/thread-log';
import { createEmbeddedKms } from '../kms/embedded-kms';
import { createKmsClient } from '../kms/kms-client';
import type { Kms } from '../kms/kms-types';
import { createEncryptionRouter } from './encryption-router';
import { createEncryptionService } from './encryption-service';

/** The KMS this process talks to: embedded (KEKs in PostgreSQL under the master key) or an external process. */
export function createKms(deps: { config: Config; db: Knex; logger: Logger }): Kms {
  const { config } = deps;
  if (config.KMS_MODE === 'external') {
    if (!config.KMS_URL || !config.KMS_TOKEN)
      throw new ConfigError('Invalid configuration:\n  KMS_URL and KMS_TOKEN are required when KMS_MODE=external');
    return createKmsClient({
      url: config.KMS_URL,
      token: config.KMS_TOKEN,
      timeoutMs: config.KMS_TIMEOUT_MS,
      probeMs: config.KMS_HEALTH_INTERVAL_MS,
      logger: deps.logger,
    });
  }
  return createEmbeddedKms({
    db: deps.db,
    logger: deps.logger,
    masterKey: config.KMS_MASTER_KEY,
    keyFile: config.KMS_MASTER_KEY_FILE ?? path.join(config.DATA_DIR, 'kms-master.key'),
  });
}

export function encryptionOptions(config: Config) {
  return {
    cacheTtlMs: config.DEK_CACHE_TTL_MS,
    cacheMax: config.DEK_CACHE_MAX,
    rotationBatch: config.KEY_ROTATION_BATCH,
    rotationGraceMs: config.KEY_ROTATION_GRACE_MS,
  };
}

export function createEncryptionModule(deps: {
  config: Config;
  db: Knex;
  logger: Logger;
  listener: PgListener;
  ingest: LogIngest;
  log: ThreadLog;
}) {
  const kms = createKms(deps);
  const service = createEncryptionService({ ...deps, kms, options: encryptionOptions(deps.config) });
  return {
    service,
    router: (routes: RouteFactory) => createEncryptionRouter({ routes, encryption: service }),
    /** The events store as live tails read it: bodies opened once per read, shared by every subscriber. */
    openingEventsStore: (store: EventsStore): EventsStore => ({
      ...store,
      after: async (db, projectId, threadId, afterSeq, limit) =>
        service.openEvents(projectId, threadId, await store.after(db, projectId, threadId, afterSeq, limit), 'lenient'),
      needsOpening: service.anySealed,
    }),
    /** Reported by /readyz without failing it: reads go on from cached keys while the KMS is away. */
    readiness: { name: 'kms', check: () => kms.healthy(), optional: true },
    start: () => service.start(),
    close: () => service.close(),
  };
}

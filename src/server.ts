import type { Server } from 'node:http';
import { createApp } from './app';
import { ConfigError, loadConfig } from './config';
import { openDatabase, privilegeWarning } from './lib/open-database';
import { createLogger } from './lib/logger';
import { runPrimary, shouldRunPrimary } from './cluster';
import { createGracefulShutdown, exitOnSignals } from './lib/shutdown';
import { credentialsPath, seedDevProject } from './modules/projects/dev-project';

async function main() {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (shouldRunPrimary(config)) return runPrimary(config);
  const logger = createLogger(config.LOG_LEVEL);
  const database = await openDatabase(config, (line) => logger.debug({ postgres: line.trim() }));
  const warning = privilegeWarning(database.privileges);
  if (warning) logger.warn({ db_user: database.privileges.user }, warning);
  logger.info({ embedded: database.embedded }, 'database ready and migrated');
  const app = createApp({ config, db: database.db, logger, databaseUrl: database.url });
  await app.start();

  if (database.embedded && config.SEED_DEV_PROJECT) {
    const creds = await seedDevProject(app.projects, config.DATA_DIR, {
      production: config.NODE_ENV === 'production',
    });
    if (creds) {
      process.stdout.write(
        [
          '',
          'Created a dev project. These keys are shown once (also saved, owner-readable only, to',
          `${credentialsPath(config.DATA_DIR)}):`,
          '',
          `  project_id      ${creds.project_id}`,
          `  secret key      ${creds.keys.secret}`,
          `  publishable key ${creds.keys.publishable}`,
          `  admin key       ${creds.keys.admin}`,
          `  signing secret  ${creds.signing_secret}`,
          '',
        ].join('\n') + '\n',
      );
    }
  }

  const server: Server = app.app.listen(config.PORT, config.HOST, () => {
    logger.info({ url: `http://${config.HOST}:${config.PORT}` }, 'ProgressDB listening');
  });
  app.attach(server);

  const shutdown = createGracefulShutdown({
    server,
    logger,
    timeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    closers: [() => app.close(), () => database.close()],
    readinessChecks: app.readinessChecks,
  });
  exitOnSignals(shutdown, logger);
}

main().catch((e) => {
  process.stderr.write(`ProgressDB failed to start: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});

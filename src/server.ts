import type { Server } from 'node:http';
import { createApp } from './app';
import { ConfigError, loadConfig } from './config';
import { openDatabase } from './lib/database';
import { createLogger } from './lib/logger';
import { credentialsPath, seedDevProject } from '../seeds/dev-project';

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
  const logger = createLogger(config.LOG_LEVEL);
  const database = await openDatabase(config, (line) => logger.debug({ postgres: line.trim() }));
  logger.info({ embedded: database.embedded }, 'database ready and migrated');
  const app = createApp({ config, db: database.db, logger, databaseUrl: database.url });
  await app.start();

  if (database.embedded && config.SEED_DEV_PROJECT) {
    const creds = await seedDevProject(app.projects, config.DATA_DIR);
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

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const deadline = setTimeout(() => {
      logger.error('shutdown deadline passed; exiting');
      process.exit(1);
    }, config.SHUTDOWN_TIMEOUT_MS);
    deadline.unref();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await app.close();
    await database.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((e) => {
  process.stderr.write(`ProgressDB failed to start: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});

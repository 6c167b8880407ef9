import { createLogger } from './lib/logger';
import { createKmsServer, kmsConfigSchema } from './modules/kms/kms-server';

/** `npm run kms`: the external KMS process (its own port, data directory and credentials). */
const parsed = kmsConfigSchema.safeParse(process.env);
if (!parsed.success) {
  process.stderr.write(
    `Invalid KMS configuration:\n${parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}\n`,
  );
  process.exit(2);
}
const config = parsed.data;
const logger = createLogger(process.env.LOG_LEVEL ?? 'info', 'progressdb-kms');
const server = createKmsServer(config, logger).listen(config.KMS_PORT, config.KMS_HOST, () => {
  logger.info({ host: config.KMS_HOST, port: config.KMS_PORT, data_dir: config.KMS_DATA_DIR }, 'KMS listening');
});
for (const signal of ['SIGTERM', 'SIGINT'] as const)
  process.once(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });

import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import type { Knex } from 'knex';
import { loadConfig, type Config } from './config';
import { openDatabase } from './lib/database';
import { idSchema } from './lib/ids';
import { createLogger } from './lib/logger';
import { ndjsonLines } from './lib/ndjson';
import { createProgressBar } from './lib/progress-bar';
import { createExportModule } from './modules/export/export-module';
import { createIngestPipeline } from './modules/ingest/ingest-pipeline';
import { knexTransactionRunner } from './modules/ingest/transaction-runner';
import { commitScope, createThreadLog } from './modules/thread-log/thread-log';
import { createMessagesStore } from './modules/messages/messages-store';
import { createKeysStore } from './modules/keys/keys-store';
import type { KeyKind } from './modules/keys/api-key';
import { createProjectsService } from './modules/projects/projects-service';
import { createProjectsStore } from './modules/projects/projects-store';

const USAGE = `Usage: npm run cli -- <command> [options]

  project create --name NAME [--json]
  key create --project ID --kind secret|publishable|admin [--name NAME] [--json]
  key list --project ID [--json]
  key revoke --project ID --key-id KID
  export --project ID --out FILE [--after-thread TID --after-seq N]   (NDJSON; progress on stderr)
  import --project ID --file FILE [--json]   (the export format; run again to resume)
  migrate

Uses DATABASE_URL, or the embedded PostgreSQL under DATA_DIR (default ./.data).`;

class UsageError extends Error {}

function required(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0) throw new UsageError(`--${name} is required`);
  return v;
}

function projectArg(values: Record<string, unknown>): string {
  const parsed = idSchema.safeParse(required(values, 'project'));
  if (!parsed.success) throw new UsageError(`--project ${parsed.error.issues[0]?.message ?? 'is not a valid id'}`);
  return parsed.data;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      project: { type: 'string' },
      kind: { type: 'string' },
      'key-id': { type: 'string' },
      out: { type: 'string' },
      file: { type: 'string' },
      'after-thread': { type: 'string' },
      'after-seq': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const command = positionals.join(' ');
  if (values.help || !command) {
    process.stdout.write(USAGE + '\n');
    return values.help ? 0 : 2;
  }
  const known = ['project create', 'key create', 'key list', 'key revoke', 'export', 'import', 'migrate'];
  if (!known.includes(command)) throw new UsageError(`unknown command "${command}"`);

  const config = loadConfig();
  const database = await openDatabase(config);
  try {
    const keysStore = createKeysStore();
    const projectsStore = createProjectsStore();
    const projects = createProjectsService({
      db: database.db,
      projectsStore,
      keysStore,
      signingSecretGraceSeconds: config.SIGNING_SECRET_GRACE_SECONDS,
    });
    const out = (json: unknown, text: string) =>
      process.stdout.write((values.json ? JSON.stringify(json) : text) + '\n');

    switch (command) {
      case 'migrate':
        process.stdout.write('migrations are current\n');
        return 0;
      case 'project create': {
        const name = required(values, 'name');
        if (name.length > 200) throw new UsageError('--name must be at most 200 characters');
        const creds = await projects.createProject({ name });
        out(
          creds,
          `project ${creds.project_id}\n  secret key      ${creds.keys.secret}\n  publishable key ${creds.keys.publishable}\n  admin key       ${creds.keys.admin}\n  signing secret  ${creds.signing_secret}\n(shown once)`,
        );
        return 0;
      }
      case 'key create': {
        const projectId = projectArg(values);
        const kind = required(values, 'kind');
        if (!['secret', 'publishable', 'admin'].includes(kind))
          throw new UsageError('--kind must be secret, publishable or admin');
        const key = await projects.createKey(projectId, kind as KeyKind, values.name ?? '');
        out({ key_id: key.id, key: key.key }, `${key.id} ${key.key}\n(shown once)`);
        return 0;
      }
      case 'key list': {
        const keys = await projects.listKeys(projectArg(values));
        out(
          keys,
          keys
            .map(
              (k) =>
                `${k.id}  ${k.kind.padEnd(11)} ${k.prefix}…  ${k.revoked_at ? 'revoked ' + k.revoked_at : 'live'}  ${k.name}`,
            )
            .join('\n') || '(no keys)',
        );
        return 0;
      }
      case 'export':
        return await exportProject(database.db, config, projectArg(values), values);
      case 'import': {
        const result = await importProject(database.db, config, projectArg(values), required(values, 'file'));
        out(
          result,
          `imported ${result.events_imported} events (${result.events_skipped} already there) in ${result.threads} threads${result.complete ? '' : ' — the file has no end line: it was cut short'}`,
        );
        return 0;
      }
      case 'key revoke': {
        await projects.revokeKey(projectArg(values), required(values, 'key-id'));
        out({ revoked: true }, 'revoked');
        return 0;
      }
    }
    return 2;
  } finally {
    await database.close();
  }
}

/** Export and import run in this process, on the same pipeline and stores as the server. */
function exportModule(db: Knex, config: Config) {
  const log = createThreadLog();
  const ingest = createIngestPipeline({
    runner: knexTransactionRunner(db),
    logger: createLogger('warn'),
    options: { maxBatch: 64, maxWaitMs: 0, lanes: 1, queueLimit: 1_000 },
    scope: commitScope,
    finish: log.notify,
  });
  const module = createExportModule({
    db,
    ingest,
    log,
    messagesStore: createMessagesStore(),
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
    maxLineBytes: config.MAX_REQUEST_BYTES,
  });
  return { ...module, close: () => ingest.close() };
}

async function exportProject(
  db: Knex,
  config: Config,
  projectId: string,
  values: Record<string, unknown>,
): Promise<number> {
  const file = required(values, 'out');
  const afterThread = values['after-thread'] === undefined ? undefined : String(values['after-thread']);
  const afterSeq = values['after-seq'] === undefined ? 0 : Number(values['after-seq']);
  if (!Number.isSafeInteger(afterSeq) || afterSeq < 0) throw new UsageError('--after-seq must be a seq (≥ 0)');
  if (afterSeq > 0 && afterThread === undefined) throw new UsageError('--after-seq needs --after-thread');
  const m = exportModule(db, config);
  try {
    const total = await m.service.eventCount(projectId, afterThread);
    const bar = createProgressBar(process.stderr, `export ${projectId}`, total, 'events');
    let exported = 0;
    // Resuming appends to the file; a fresh export replaces it.
    const sink = createWriteStream(file, { flags: afterThread === undefined ? 'w' : 'a' });
    for await (const chunk of m.service.exportLines(projectId, { afterThread, afterSeq }, (n) =>
      bar.update((exported = n)),
    )) {
      if (!sink.write(chunk)) await once(sink, 'drain');
    }
    sink.end();
    await once(sink, 'finish');
    bar.done(exported);
    return 0;
  } finally {
    await m.close();
  }
}

async function importProject(db: Knex, config: Config, projectId: string, file: string) {
  const m = exportModule(db, config);
  try {
    const size = statSync(file).size;
    const bar = createProgressBar(process.stderr, `import ${projectId}`, size, 'bytes');
    let read = 0;
    async function* counted() {
      for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
        read += chunk.length;
        yield chunk;
      }
    }
    const result = await m.service.importLines(projectId, ndjsonLines(counted(), config.MAX_REQUEST_BYTES), () =>
      bar.update(read),
    );
    bar.done(read);
    return result;
  } finally {
    await m.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    const message =
      e instanceof UsageError || (e as { name?: string }).name === 'ZodError' || (e as { kind?: string }).kind
        ? (e as Error).message
        : String((e as Error).stack ?? e);
    process.stderr.write(`error: ${message}\n${e instanceof UsageError ? '\n' + USAGE + '\n' : ''}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);

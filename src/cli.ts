import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import type { Knex } from 'knex';
import { loadConfig, type Config } from './config';
import { openDatabase } from './lib/open-database';
import { idSchema } from './lib/ids';
import { createLogger } from './lib/logger';
import { createKms, encryptionOptions } from './modules/encryption/encryption-module';
import { createEncryptionService } from './modules/encryption/encryption-service';
import { ndjsonLines } from './lib/ndjson';
import { createProgressBar } from './lib/progress-bar';
import { createExportModule } from './modules/export/export-module';
import { createThreadLogModule } from './modules/thread-log/thread-log-module';
import { createMessagesStore } from './modules/messages/messages-store';
import { createKeysStore } from './modules/keys/keys-store';
import { keyKindSchema, type KeyKind } from './lib/key-kind';
import { createProjectsService } from './modules/projects/projects-service';
import { createProjectsStore } from './modules/projects/projects-store';
import { projectSettingsSchema, readSettings } from './modules/projects/project-settings';

const USAGE = `Usage: npm run -s cli -- <command> [options]   (-s: no npm banner, so --json output pipes cleanly)

  project create --name NAME [--json]
  project list [--json]
  project update --project ID [--name NAME] [--allowed-origin ORIGIN]… [--ip-allow CIDR]…
      [--rate-limit CLASS=LIMIT/SECONDS]… (CLASS read|write|auth) [--retention-days N|none]
      [--deleted-thread-retention-days N|none] [--max-messages-per-thread N|none]
      [--encrypted-field PATH]… [--clear SETTING]… [--json]
      A list option given replaces the stored list; --clear removes a setting (back to the default).
  key create --project ID --kind secret|publishable|admin [--name NAME] [--json]
  key list --project ID [--json]
  key revoke --project ID --key-id KID
  encryption rotate --project ID [--json]   new KEK version, rewrap every data key, retire unused versions
  encryption status --project ID [--json]
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
      'allowed-origin': { type: 'string', multiple: true },
      'ip-allow': { type: 'string', multiple: true },
      'rate-limit': { type: 'string', multiple: true },
      'retention-days': { type: 'string' },
      'deleted-thread-retention-days': { type: 'string' },
      'max-messages-per-thread': { type: 'string' },
      'encrypted-field': { type: 'string', multiple: true },
      clear: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const command = positionals.join(' ');
  if (values.help || !command) {
    process.stdout.write(USAGE + '\n');
    return values.help ? 0 : 2;
  }
  const known = [
    'project create',
    'project list',
    'project update',
    'key create',
    'key list',
    'key revoke',
    'encryption rotate',
    'encryption status',
    'export',
    'import',
    'migrate',
  ];
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
      case 'project list': {
        const rows = (await projects.listAll()).map(projectView);
        out(rows, rows.map((p) => `${p.id}  ${p.name}  ${JSON.stringify(p.settings)}`).join('\n') || '(no projects)');
        return 0;
      }
      case 'project update': {
        const projectId = projectArg(values);
        const current = await projects.get(projectId);
        const name = values.name;
        if (name !== undefined && (name.trim().length === 0 || name.length > 100))
          throw new UsageError('--name must be 1–100 characters');
        const patch = settingsPatch(values);
        const merged: Record<string, unknown> = { ...readSettings(current.settings), ...patch.set };
        for (const k of patch.clear) delete merged[k];
        const parsed = projectSettingsSchema.safeParse(merged);
        if (!parsed.success)
          throw new UsageError(parsed.error.issues.map((i) => `settings.${i.path.join('.')}: ${i.message}`).join('\n'));
        const row = await projects.updateProject(projectId, { name: name?.trim(), settings: parsed.data });
        // Every replica drops its cached keys and settings of this project.
        await projects.notifyKeysChanged(projectId);
        const view = projectView(row);
        out(view, `${view.id}  ${view.name}\n${JSON.stringify(view.settings, null, 2)}`);
        return 0;
      }
      case 'key create': {
        const projectId = projectArg(values);
        const kind = required(values, 'kind');
        if (!keyKindSchema.options.includes(kind as KeyKind))
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
      case 'encryption rotate':
      case 'encryption status': {
        const projectId = projectArg(values);
        const logger = createLogger(process.env.LOG_LEVEL ?? 'warn', 'progressdb-cli');
        const encryption = createEncryptionService({
          db: database.db,
          kms: createKms({ config, db: database.db, logger }),
          logger,
          options: encryptionOptions(config),
        });
        try {
          if (command === 'encryption status') {
            const status = await encryption.status(projectId);
            out(status, JSON.stringify(status, null, 2));
            return 0;
          }
          const { done, id } = await encryption.rotate(projectId, null);
          await done;
          const r = await encryption.rotation(projectId, id);
          out(
            r,
            `rotation ${r.id}: ${r.state}, KEK version ${r.kek_version}, ${r.rewrapped}/${r.total} data keys rewrapped, retired versions [${r.retired_versions.join(', ')}]${r.error ? `\n${r.error}` : ''}`,
          );
          return r.state === 'done' ? 0 : 1;
        } finally {
          await encryption.close();
        }
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

const projectView = (p: { id: string; name: string; settings: unknown; created_at: string; updated_at: string }) => ({
  id: p.id,
  name: p.name,
  settings: (p.settings ?? {}) as Record<string, unknown>,
  created_at: p.created_at,
  updated_at: p.updated_at,
});

const SETTING_NAMES = [
  'allowed_origins',
  'ip_allowlist',
  'rate_limits',
  'retention_days',
  'deleted_thread_retention_days',
  'max_messages_per_thread',
  'encrypted_fields',
];

/** The settings named on the command line; validated afterwards by the one settings schema. */
function settingsPatch(values: Record<string, unknown>): { set: Record<string, unknown>; clear: string[] } {
  const set: Record<string, unknown> = {};
  const list = (name: string) => values[name] as string[] | undefined;
  const nullableInt = (name: string) => {
    const v = values[name] as string | undefined;
    if (v === undefined) return undefined;
    if (v === 'none') return null;
    if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a whole number or none`);
    return Number(v);
  };
  if (list('allowed-origin')) set.allowed_origins = list('allowed-origin');
  if (list('ip-allow')) set.ip_allowlist = list('ip-allow');
  if (list('encrypted-field')) set.encrypted_fields = list('encrypted-field');
  if (list('rate-limit')) {
    const limits: Record<string, { limit: number; window_seconds: number }> = {};
    for (const spec of list('rate-limit')!) {
      const m = /^(read|write|auth)=(\d+)\/(\d+)$/.exec(spec);
      if (!m) throw new UsageError(`--rate-limit ${spec}: expected CLASS=LIMIT/SECONDS, e.g. write=600/60`);
      limits[m[1]] = { limit: Number(m[2]), window_seconds: Number(m[3]) };
    }
    set.rate_limits = limits;
  }
  for (const [flag, key] of [
    ['retention-days', 'retention_days'],
    ['deleted-thread-retention-days', 'deleted_thread_retention_days'],
    ['max-messages-per-thread', 'max_messages_per_thread'],
  ] as const) {
    const v = nullableInt(flag);
    if (v !== undefined) set[key] = v;
  }
  const clear = (list('clear') ?? []).map((c) => c.replace(/-/g, '_'));
  for (const c of clear)
    if (!SETTING_NAMES.includes(c)) throw new UsageError(`--clear ${c}: not a setting (${SETTING_NAMES.join(', ')})`);
  return { set, clear };
}

/** Export and import run in this process, on the same pipeline and stores as the server. */
function exportModule(db: Knex, config: Config) {
  const { log, ingest } = createThreadLogModule({
    db,
    logger: createLogger('warn'),
    options: { maxBatch: 64, maxWaitMs: 0, lanes: 1, queueLimit: 1_000 },
  });
  const logger = createLogger('warn');
  const encryption = createEncryptionService({
    db,
    kms: createKms({ config, db, logger }),
    logger,
    options: encryptionOptions(config),
  });
  const module = createExportModule({
    db,
    ingest,
    log,
    messagesStore: createMessagesStore(),
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
    maxLineBytes: config.MAX_REQUEST_BYTES,
    crypto: encryption,
  });
  return { ...module, close: () => ingest.close().then(() => encryption.close()) };
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

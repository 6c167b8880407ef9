import { parseArgs } from 'node:util';
import { loadConfig } from './config';
import { openDatabase } from './lib/open-database';
import { idSchema } from './lib/ids';
import { createKeysStore } from './modules/keys/keys-store';
import { keyKindSchema, type KeyKind } from './lib/key-kind';
import { createProjectsService } from './modules/projects/projects-service';
import { createProjectsStore } from './modules/projects/projects-store';

const USAGE = `Usage: npm run cli -- <command> [options]

  project create --name NAME [--json]
  key create --project ID --kind secret|publishable|admin [--name NAME] [--json]
  key list --project ID [--json]
  key revoke --project ID --key-id KID
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
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const command = positionals.join(' ');
  if (values.help || !command) {
    process.stdout.write(USAGE + '\n');
    return values.help ? 0 : 2;
  }
  const known = ['project create', 'key create', 'key list', 'key revoke', 'migrate'];
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

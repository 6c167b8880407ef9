import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import type { ProjectCredentials, ProjectsService } from '../src/modules/projects/projects-service';

export const credentialsPath = (dataDir: string) => path.resolve(dataDir, 'dev-credentials.json');

/**
 * The first start's dev project: created once, its keys printed once and kept, readable by the
 * owner only, in DATA_DIR/dev-credentials.json (same shape as `cli project create --json`).
 */
export async function seedDevProject(projects: ProjectsService, dataDir: string): Promise<ProjectCredentials | null> {
  const file = credentialsPath(dataDir);
  if (existsSync(file)) return null;
  const creds = await projects.createProject({ name: 'Dev project' });
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return creds;
}

/** `knex seed:run` entry: a demo project when the database has none. */
export async function seed(knex: Knex): Promise<void> {
  const { createProjectsService } = await import('../src/modules/projects/projects-service');
  const { createProjectsStore } = await import('../src/modules/projects/projects-store');
  const { createKeysStore } = await import('../src/modules/keys/keys-store');
  const [{ count }] = await knex('projects').count<{ count: string }[]>('* as count');
  if (Number(count) > 0) return;
  const projects = createProjectsService({
    db: knex,
    projectsStore: createProjectsStore(),
    keysStore: createKeysStore(),
    signingSecretGraceSeconds: 86400,
  });
  const creds = await seedDevProject(projects, process.env.DATA_DIR ?? './.data');
  if (creds) process.stdout.write(JSON.stringify(creds, null, 2) + '\n');
}

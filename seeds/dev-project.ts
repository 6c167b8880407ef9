import type { Knex } from 'knex';

/** `knex seed:run` entry: a demo project when the database has none. */
export async function seed(knex: Knex): Promise<void> {
  const { createProjectsService } = await import('../src/modules/projects/projects-service');
  const { createProjectsStore } = await import('../src/modules/projects/projects-store');
  const { createKeysStore } = await import('../src/modules/keys/keys-store');
  const { seedDevProject } = await import('../src/modules/projects/dev-project');
  const [{ count }] = await knex('projects').count<{ count: string }[]>('* as count');
  if (Number(count) > 0) return;
  const projects = createProjectsService({
    db: knex,
    projectsStore: createProjectsStore(),
    keysStore: createKeysStore(),
    signingSecretGraceSeconds: 86400,
  });
  const creds = await seedDevProject(projects, process.env.DATA_DIR ?? './.data', {
    production: process.env.NODE_ENV === 'production',
  });
  if (creds) process.stdout.write(JSON.stringify(creds, null, 2) + '\n');
}

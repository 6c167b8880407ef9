import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ProjectCredentials, ProjectsService } from './projects-service';

export const credentialsPath = (dataDir: string) => path.resolve(dataDir, 'dev-credentials.json');

/**
 * Browser pages on this machine, any port (a dev server's port is anyone's guess), so the
 * publishable key works from a local page with no console step. Never in production.
 */
export const DEV_ALLOWED_ORIGINS = ['http://localhost:*', 'http://127.0.0.1:*', 'http://[::1]:*'];

/**
 * The first start's dev project: created once, its keys printed once and kept, readable by the
 * owner only, in DATA_DIR/dev-credentials.json (same shape as `cli project create --json`).
 * Outside production its publishable key accepts `DEV_ALLOWED_ORIGINS`.
 */
export async function seedDevProject(
  projects: Pick<ProjectsService, 'createProject'>,
  dataDir: string,
  opts: { production: boolean },
): Promise<ProjectCredentials | null> {
  const file = credentialsPath(dataDir);
  if (existsSync(file)) return null;
  const creds = await projects.createProject({
    name: 'Dev project',
    ...(opts.production ? {} : { settings: { allowed_origins: DEV_ALLOWED_ORIGINS } }),
  });
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return creds;
}

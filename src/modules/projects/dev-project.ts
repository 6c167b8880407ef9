import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ProjectCredentials, ProjectsService } from './projects-service';

export const credentialsPath = (dataDir: string) => path.resolve(dataDir, 'dev-credentials.json');

/**
 * The first start's dev project: created once, its keys printed once and kept, readable by the
 * owner only, in DATA_DIR/dev-credentials.json (same shape as `cli project create --json`).
 */
export async function seedDevProject(
  projects: Pick<ProjectsService, 'createProject'>,
  dataDir: string,
): Promise<ProjectCredentials | null> {
  const file = credentialsPath(dataDir);
  if (existsSync(file)) return null;
  const creds = await projects.createProject({ name: 'Dev project' });
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return creds;
}

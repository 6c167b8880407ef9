/**
 * Compiled JavaScript for `BENCH_SERVER=compiled` / `npm run bench:compiled`: every file of src/
 * transpiled by esbuild (one .js per .ts, no bundling) into dist/src/, so each module keeps its
 * place relative to the others and `__dirname` means what it did:
 *   - src/lib/migrate.ts finds migrations at `__dirname/../../migrations` = dist/migrations, a
 *     symlink to the repository's migrations/ (the .ts files). Hazard: knex records migrations
 *     by file name WITH the extension, so compiling the migrations to .js would make a server
 *     started on a tsx-migrated database refuse to start ("migration directory is corrupt, the
 *     following files are missing: ….ts"), and the reverse. Here the database is migrated before
 *     the server starts and knex only loads pending migrations, so the .ts names are listed and
 *     never loaded; a production build needs one naming (compile the migrations too and keep
 *     .js everywhere, or a knex migrationSource that names them without the extension).
 *   - src/modules/console/console-router.ts serves `__dirname/public`: copied over.
 *   - A bundle (esbuild --bundle) would put every `__dirname` at the bundle's directory and break
 *     both of the above unless they are made configurable.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

const root = path.resolve(__dirname, '..');
export const COMPILED_SERVER = path.join(root, 'dist', 'src', 'server.js');

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return f.endsWith('.ts') && !f.endsWith('.d.ts') ? [p] : [];
  });
}

export async function buildCompiled(): Promise<string> {
  const out = path.join(root, 'dist');
  rmSync(out, { recursive: true, force: true });
  await build({
    entryPoints: tsFiles(path.join(root, 'src')),
    outdir: path.join(out, 'src'),
    outbase: path.join(root, 'src'),
    format: 'cjs',
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    logLevel: 'warning',
  });
  mkdirSync(out, { recursive: true });
  symlinkSync('../migrations', path.join(out, 'migrations'));
  const pub = path.join(root, 'src', 'modules', 'console', 'public');
  if (existsSync(pub)) cpSync(pub, path.join(out, 'src', 'modules', 'console', 'public'), { recursive: true });
  return COMPILED_SERVER;
}

if (require.main === module) {
  buildCompiled().then(
    (f) => process.stdout.write(`compiled src/ to ${path.relative(root, f)}\n`),
    (e) => {
      process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}

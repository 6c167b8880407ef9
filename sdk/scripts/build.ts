/**
 * `npm run sdk:build`: sdk/dist/ with ESM (.mjs) and CommonJS (.cjs) bundles of the client and
 * its React bindings, and type declarations. The bundles target the neutral platform: they use
 * only what browsers and Node 20 both provide, so a Node built-in cannot slip into them.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { build, type BuildOptions } from 'esbuild';

export const sdkRoot = path.resolve(__dirname, '..');
export const distDir = path.join(sdkRoot, 'dist');

const entries = { index: 'src/index.ts', react: 'src/react/index.tsx' };

export async function buildSdk(outdir = distDir): Promise<void> {
  rmSync(outdir, { recursive: true, force: true });
  const common: BuildOptions = {
    absWorkingDir: sdkRoot,
    bundle: true,
    platform: 'neutral',
    target: 'es2022',
    jsx: 'automatic',
    external: ['react', 'react/jsx-runtime'],
    sourcemap: true,
    logLevel: 'warning',
  };
  await Promise.all(
    Object.entries(entries).flatMap(([name, entry]) => [
      build({ ...common, entryPoints: { [name]: entry }, format: 'esm', outdir, outExtension: { '.js': '.mjs' } }),
      build({ ...common, entryPoints: { [name]: entry }, format: 'cjs', outdir, outExtension: { '.js': '.cjs' } }),
    ]),
  );
  const tsc = spawnSync(
    process.execPath,
    [
      require.resolve('typescript/bin/tsc'),
      '-p',
      sdkRoot,
      '--noEmit',
      'false',
      '--declaration',
      '--emitDeclarationOnly',
      '--outDir',
      path.join(outdir, 'types'),
    ],
    { encoding: 'utf8' },
  );
  if (tsc.status !== 0) throw new Error(`tsc (declarations) failed:\n${tsc.stdout}${tsc.stderr}`);
}

if (require.main === module) {
  buildSdk().then(
    () => process.stdout.write(`built ${path.relative(process.cwd(), distDir)}\n`),
    (e: unknown) => {
      process.stderr.write(`sdk build failed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}

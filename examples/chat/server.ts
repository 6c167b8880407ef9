/**
 * The example chat app's backend (`npm run example`): serves the page, bundles the React app
 * (esbuild, in memory, once at start: no build step to run), and signs users in. It holds the
 * secret key; the browser gets only the publishable key and its user's signature.
 *
 * Settings (environment): PROGRESSDB_URL (comma-separated replicas, default http://127.0.0.1:8080),
 * PROGRESSDB_SECRET_KEY, PROGRESSDB_PUBLISHABLE_KEY, PROGRESSDB_SIGNING_SECRET (default: the dev
 * project's, from .data/dev-credentials.json written by the first `npm start`), PORT (default 3000), HOST (default localhost).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { build } from 'esbuild';
import { createBackendClient, ProgressDBError } from '../../sdk/src/index';

const here = __dirname;
const repoRoot = path.resolve(here, '../..');

export interface ExampleConfig {
  apiUrls: string[];
  secretKey: string;
  publishableKey: string;
  signingSecret?: string;
  port: number;
  host: string;
}

interface DevCredentials {
  signing_secret: string;
  keys: { secret: string; publishable: string };
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ExampleConfig {
  let dev: DevCredentials | undefined;
  if (!env.PROGRESSDB_SECRET_KEY || !env.PROGRESSDB_PUBLISHABLE_KEY) {
    try {
      dev = JSON.parse(readFileSync(path.join(repoRoot, '.data/dev-credentials.json'), 'utf8')) as DevCredentials;
    } catch {
      throw new Error(
        'No keys: run `npm start` once (it writes .data/dev-credentials.json), or set PROGRESSDB_SECRET_KEY and PROGRESSDB_PUBLISHABLE_KEY.',
      );
    }
  }
  return {
    apiUrls: (env.PROGRESSDB_URL ?? 'http://127.0.0.1:8080').split(',').map((u) => u.trim()),
    secretKey: env.PROGRESSDB_SECRET_KEY ?? dev!.keys.secret,
    publishableKey: env.PROGRESSDB_PUBLISHABLE_KEY ?? dev!.keys.publishable,
    signingSecret: env.PROGRESSDB_SIGNING_SECRET ?? dev?.signing_secret,
    port: Number(env.PORT ?? 3000),
    host: env.HOST ?? 'localhost',
  };
}

/** Threads every demo user joins on sign-in, so a fresh project has somewhere to talk. */
const DEMO_THREADS = [
  { id: 'general', title: 'General' },
  { id: 'random', title: 'Random' },
];

export async function startExample(config: ExampleConfig) {
  const bundle = await build({
    entryPoints: [path.join(here, 'web/main.tsx')],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    jsx: 'automatic',
    minify: true,
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'warning',
  });
  const assets: Record<string, { type: string; body: string | Uint8Array }> = {
    '/': { type: 'text/html; charset=utf-8', body: readFileSync(path.join(here, 'web/index.html'), 'utf8') },
    '/app.js': { type: 'text/javascript; charset=utf-8', body: bundle.outputFiles[0].contents },
    '/app.css': { type: 'text/css; charset=utf-8', body: readFileSync(path.join(here, 'web/app.css'), 'utf8') },
  };
  const backend = createBackendClient({
    baseUrl: config.apiUrls,
    secretKey: config.secretKey,
    signingSecret: config.signingSecret,
  });

  async function signIn(userId: string) {
    for (const t of DEMO_THREADS) {
      await backend.threads.create({ id: t.id, type: 'group', title: t.title }).catch((e: unknown) => {
        if (!(e instanceof ProgressDBError && e.status === 409)) throw e;
      });
      await backend.members.set(t.id, userId, 'member');
    }
    return {
      user_id: userId,
      signature: await backend.signUser(userId),
      publishable_key: config.publishableKey,
      api_urls: config.apiUrls,
    };
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://example');
    const asset = req.method === 'GET' ? assets[url.pathname] : undefined;
    if (asset) {
      res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-store' });
      res.end(asset.body);
      return;
    }
    if (req.method === 'POST' && url.pathname === '/api/session') {
      let raw = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (raw.length < 4096 ? (raw += c) : req.destroy()));
      req.on('end', () => {
        let userId: unknown;
        try {
          userId = (JSON.parse(raw) as { user_id?: unknown }).user_id;
        } catch {
          /* answered below */
        }
        // A real app signs whoever its own login says the user is; this demo trusts the form.
        if (typeof userId !== 'string' || !/^[a-z0-9_-]{1,32}$/.test(userId)) {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'user_id: 1–32 of a-z, 0-9, _ and -' }));
          return;
        }
        signIn(userId).then(
          (session) => {
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(JSON.stringify(session));
          },
          (e: unknown) => {
            res.writeHead(502, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }));
          },
        );
      });
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  await new Promise<void>((resolve) => server.listen(config.port, config.host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

if (require.main === module) {
  startExample(configFromEnv()).then(
    (s) => process.stdout.write(`example chat on ${s.url} (ProgressDB at ${configFromEnv().apiUrls.join(', ')})\n`),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}

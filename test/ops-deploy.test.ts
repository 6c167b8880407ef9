/**
 * Docker is not available where the suite runs, so the Dockerfile and compose file are never
 * built here; these checks catch what a build would only reveal at run time: settings the
 * service does not know (a typo is silently ignored), replicas nginx cannot resolve, a kill
 * timeout shorter than the drain.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { configSchema, loadConfig } from '../src/config';
import { repoRoot } from './helpers/processes';

const read = (file: string) => readFileSync(path.join(repoRoot, file), 'utf8');
const known = new Set(Object.keys(configSchema.shape));

test('every setting the compose file and the Dockerfile give the service is one it reads, and valid', () => {
  const compose = read('docker-compose.yml');
  const composeEnv = new Map(
    [...compose.matchAll(/^ {4}([A-Z][A-Z0-9_]*): *(.*)$/gm)]
      .filter((m) => !m[1].startsWith('POSTGRES_'))
      .map((m) => [m[1], m[2].replace(/^"|"$/g, '')]),
  );
  const dockerfileEnv = new Map(
    [...read('Dockerfile').matchAll(/^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]*)=(\S+?)\s*\\?$/gm)].map((m) => [m[1], m[2]]),
  );
  assert.ok(composeEnv.size >= 8 && dockerfileEnv.size >= 3, 'the files were parsed');
  for (const [name] of [...composeEnv, ...dockerfileEnv])
    assert.ok(known.has(name), `${name} is not a setting of src/config.ts`);

  // Values without ${…} interpolation must pass validation as they stand.
  const literal = (m: Map<string, string>) => Object.fromEntries([...m].filter(([, v]) => !v.includes('${')));
  assert.doesNotThrow(() =>
    loadConfig({}, { ...literal(dockerfileEnv), ...literal(composeEnv), DATABASE_URL: 'postgres://x@db/x' }),
  );
  assert.equal(dockerfileEnv.get('HOST'), '0.0.0.0');
});

test('nginx upstreams are compose services, and the drain fits in the stop grace period', () => {
  const compose = read('docker-compose.yml');
  const services = new Set([...compose.matchAll(/^ {2}([a-z0-9_-]+):\s*$/gm)].map((m) => m[1]));
  const upstreams = [...read('deploy/nginx-upstreams.conf').matchAll(/^\s*server\s+([a-z0-9_-]+):(\d+)/gm)];
  assert.ok(upstreams.length >= 2, 'at least two replicas behind nginx');
  for (const [, host, port] of upstreams) {
    assert.ok(services.has(host), `upstream ${host} is not a compose service`);
    assert.equal(port, '8080');
  }
  assert.match(read('deploy/nginx.conf'), /^\s*listen 8080;$/m);
  assert.match(compose, /"8080:8080"/);

  const grace = Number(/stop_grace_period: (\d+)s/.exec(compose)?.[1]);
  const drainMs = Number(/SHUTDOWN_TIMEOUT_MS: "(\d+)"/.exec(compose)?.[1]);
  assert.ok(grace * 1000 > drainMs, `stop_grace_period ${grace}s must exceed SHUTDOWN_TIMEOUT_MS ${drainMs}`);
});

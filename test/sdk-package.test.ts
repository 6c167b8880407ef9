import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { generateTypes, GENERATED_PATH } from '../sdk/scripts/generate-types';
import { buildSdk, distDir, sdkRoot } from '../sdk/scripts/build';
import { startTestApp, type TestContext } from './helpers/app';

import type * as SdkSource from '../sdk/src/index';

type Sdk = typeof SdkSource;
/** Loads a built file as a CommonJS consumer would. */
const requireBuilt = createRequire(__filename);

describe('SDK package (@progressdb/client)', () => {
  let t: TestContext;
  before(async () => {
    t = await startTestApp();
    await buildSdk();
  });
  after(() => t.stop());

  test('the committed types match the OpenAPI document (run `npm run sdk:generate` if this fails)', async () => {
    const fresh = await generateTypes();
    const committed = readFileSync(GENERATED_PATH, 'utf8');
    assert.ok(
      fresh === committed,
      'sdk/src/generated/openapi.ts is stale: the API changed. Run `npm run sdk:generate` and commit the result.',
    );
    // And the generated file covers the data plane the client wraps.
    for (const route of ['/v1/threads/{thread_id}/messages/batch', '/v1/me/unread', '/v1/_sign'])
      assert.ok(committed.includes(`'${route}'`), route);
  });

  test('builds ESM, CommonJS and declarations; exports resolve; no runtime dependencies', () => {
    const pkg = JSON.parse(readFileSync(path.join(sdkRoot, 'package.json'), 'utf8')) as {
      name: string;
      dependencies?: Record<string, string>;
      exports: Record<string, Record<string, string> | string>;
      peerDependenciesMeta: Record<string, { optional: boolean }>;
    };
    assert.equal(pkg.name, '@progressdb/client');
    assert.equal(pkg.dependencies, undefined, 'zero runtime dependencies');
    assert.equal(pkg.peerDependenciesMeta.react.optional, true);
    for (const entry of Object.values(pkg.exports)) {
      const files = typeof entry === 'string' ? [entry] : Object.values(entry);
      for (const f of files) assert.ok(existsSync(path.join(sdkRoot, f)), `${f} exists`);
    }
    // The bundles run in browsers: nothing from Node's standard library, no require of anything
    // but React in the bindings.
    for (const file of ['index.mjs', 'index.cjs', 'react.mjs', 'react.cjs']) {
      const code = readFileSync(path.join(distDir, file), 'utf8');
      assert.doesNotMatch(code, /["'](node:)?(fs|net|http|https|crypto|stream|events|buffer|child_process)["']/, file);
      assert.doesNotMatch(code, /\bprocess\.|\bBuffer\./, file);
      const required = [...code.matchAll(/require\(["']([^"']+)["']\)/g)].map((m) => m[1]);
      assert.deepEqual(
        required.filter((r) => !r.startsWith('react')),
        [],
        file,
      );
    }
  });

  test('the CommonJS and ESM builds both talk to a real server', async () => {
    const creds = await t.project('sdk package');
    const cjs = requireBuilt(path.join(distDir, 'index.cjs')) as Sdk;
    const esm = (await import(pathToFileURL(path.join(distDir, 'index.mjs')).href)) as Sdk;
    for (const [name, sdk] of [
      ['cjs', cjs],
      ['esm', esm],
    ] as const) {
      const client = sdk.createBackendClient({ baseUrl: t.url, secretKey: creds.keys.secret });
      const m = await client.asUser('zoe').messages.send(`pkg-${name}`, { body: { text: name } });
      assert.equal(m.author, 'zoe');
      const err = await client.threads.get('missing').catch((e: unknown) => e);
      assert.ok(err instanceof sdk.ProgressDBError);
      assert.equal(err.status, 404);
    }
    const react = requireBuilt(path.join(distDir, 'react.cjs')) as Record<string, unknown>;
    assert.equal(typeof react.useMessages, 'function');
    assert.equal(typeof react.ProgressDBProvider, 'function');
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Knex } from 'knex';
import { generateApiKey } from '../../src/modules/keys/api-key';
import { createKeyAuthService, signUserId } from '../../src/modules/keys/key-auth-service';
import type { KeysStore } from '../../src/modules/keys/keys-store';

/** A key store answering one publishable key of one project, whose secrets the test rotates. */
function fakeStore(project: { secret: string; previous: string | null; previousExpiresAt: number | null }) {
  let reads = 0;
  const store = {
    findByHash: () => {
      reads++;
      return Promise.resolve({
        key_id: 'key_1',
        kind: 'publishable' as const,
        project_id: 'prj_1',
        signing_secret: project.secret,
        previous_signing_secret: project.previous,
        previous_signing_secret_expires_at:
          project.previousExpiresAt === null ? null : new Date(project.previousExpiresAt).toISOString(),
        settings: {},
      });
    },
    touch: () => Promise.resolve(),
    userTokensNotBefore: () => Promise.resolve(null),
  };
  return { store: store as unknown as KeysStore, reads: () => reads };
}

describe('key auth: remembered signatures (pure)', () => {
  const key = generateApiKey('publishable');

  test('a signature verified under the previous secret stops verifying when its grace period ends', async () => {
    const clock = { t: Date.parse('2026-01-01T00:00:00Z') };
    const project = { secret: 'new-secret', previous: 'old-secret', previousExpiresAt: clock.t + 60_000 };
    const { store } = fakeStore(project);
    const auth = createKeyAuthService({ db: {} as Knex, keysStore: store, cacheTtlMs: 3_600_000, now: () => clock.t });
    const oldSignature = signUserId('old-secret', 'u1');
    const p = await auth.authenticate(key, 'u1', oldSignature);
    assert.equal(p.userId, 'u1');
    clock.t += 59_999;
    assert.equal((await auth.authenticate(key, 'u1', oldSignature)).userId, 'u1', 'still within the grace period');
    clock.t += 1;
    await assert.rejects(auth.authenticate(key, 'u1', oldSignature), /X-User-Signature does not match/);
    assert.equal(
      (await auth.authenticate(key, 'u1', signUserId('new-secret', 'u1'))).userId,
      'u1',
      'the current secret still verifies',
    );
  });

  test('a verified signature is not carried over to a re-read key (a rotation without grace)', async () => {
    const project = { secret: 'first', previous: null, previousExpiresAt: null };
    const { store, reads } = fakeStore(project);
    const auth = createKeyAuthService({ db: {} as Knex, keysStore: store, cacheTtlMs: 3_600_000 });
    const signature = signUserId('first', 'u1');
    await auth.authenticate(key, 'u1', signature);
    await auth.authenticate(key, 'u1', signature);
    assert.equal(reads(), 1, 'the key is read once, then cached');
    project.secret = 'second';
    auth.invalidate('prj_1');
    await assert.rejects(auth.authenticate(key, 'u1', signature), /X-User-Signature does not match/);
    assert.equal((await auth.authenticate(key, 'u1', signUserId('second', 'u1'))).userId, 'u1');
  });

  test('a remembered signature is bound to its user', async () => {
    const { store } = fakeStore({ secret: 's', previous: null, previousExpiresAt: null });
    const auth = createKeyAuthService({ db: {} as Knex, keysStore: store, cacheTtlMs: 3_600_000 });
    const signature = signUserId('s', 'u1');
    await auth.authenticate(key, 'u1', signature);
    await assert.rejects(auth.authenticate(key, 'u2', signature), /X-User-Signature does not match/);
  });
});

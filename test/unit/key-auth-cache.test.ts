import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import type { Knex } from 'knex';
import { generateApiKey } from '../../src/modules/keys/api-key';
import { createKeyAuthService } from '../../src/modules/keys/key-auth-service';
import type { KeysStore } from '../../src/modules/keys/keys-store';

type Row = Awaited<ReturnType<KeysStore['findByHash']>>;

/** A keys store whose reads the test answers by hand, and a clock it moves. */
function setup(ttlMs = 1_000) {
  const reads: Array<(row: Row) => void> = [];
  const row: NonNullable<Row> = {
    key_id: 'k1',
    kind: 'secret',
    project_id: 'p1',
    signing_secret: 's',
    previous_signing_secret: null,
    previous_signing_secret_expires_at: null,
    settings: {},
  };
  const keysStore = {
    findByHash: () => new Promise<Row>((resolve) => reads.push(resolve)),
    touch: async () => undefined,
  } as unknown as KeysStore;
  const clock = { t: 1_000_000 };
  const auth = createKeyAuthService({ db: {} as Knex, keysStore, cacheTtlMs: ttlMs, now: () => clock.t });
  return { auth, reads, row, clock, key: generateApiKey('secret') };
}

describe('API key cache (pure)', () => {
  test('requests that find a key uncached together share one database read', async () => {
    const { auth, reads, row, key } = setup();
    const pending = Array.from({ length: 10 }, () => auth.authenticate(key, undefined, undefined));
    await tick();
    assert.equal(reads.length, 1);
    reads[0](row);
    const principals = await Promise.all(pending);
    assert.ok(principals.every((p) => p.type === 'api' && p.projectId === 'p1'));
    assert.equal(auth.lookups(), 1);
  });

  test('a key in use is re-read in the last quarter of its life, so its requests never wait for an expiry', async () => {
    const { auth, reads, row, clock, key } = setup(1_000);
    const first = auth.authenticate(key, undefined, undefined);
    await tick();
    reads[0](row);
    await first;
    clock.t += 500;
    await auth.authenticate(key, undefined, undefined);
    assert.equal(reads.length, 1, 'half-way through its life the entry is simply used');
    clock.t += 300;
    await auth.authenticate(key, undefined, undefined);
    assert.equal(reads.length, 2, 'in its last quarter a background read starts');
    await auth.authenticate(key, undefined, undefined);
    assert.equal(reads.length, 2, 'one background read at a time');
    reads[1](row);
    await tick();
    clock.t += 500; // past the first entry's expiry, within the re-read one's
    await auth.authenticate(key, undefined, undefined);
    assert.equal(reads.length, 2);
  });

  test('an expired entry is not used while it is re-read', async () => {
    const { auth, reads, row, clock, key } = setup(1_000);
    const first = auth.authenticate(key, undefined, undefined);
    await tick();
    reads[0](row);
    await first;
    clock.t += 1_001;
    let answered = false;
    const second = auth.authenticate(key, undefined, undefined).then(() => (answered = true));
    await tick();
    assert.equal(reads.length, 2);
    assert.equal(answered, false);
    reads[1](row);
    await second;
  });

  test('a read begun before an invalidation is neither joined nor cached', async () => {
    const { auth, reads, row, key } = setup();
    const early = auth.authenticate(key, undefined, undefined);
    await tick();
    auth.invalidate('p1'); // e.g. the key was revoked while the read was under way
    const late = auth.authenticate(key, undefined, undefined);
    await tick();
    assert.equal(reads.length, 2, 'a request after the invalidation reads again');
    reads[1](undefined); // the revocation is visible to the read that started after it
    await assert.rejects(late, /not valid or has been revoked/);
    reads[0](row); // the early read answers last, with the key as it was before
    await early;
    await assert.rejects(auth.authenticate(key, undefined, undefined), /not valid or has been revoked/);
    assert.equal(reads.length, 2, 'the early read cached nothing; the refusal is remembered');
  });
});

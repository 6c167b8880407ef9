import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createPageCache } from '../../src/modules/messages/page-cache';

describe('page cache (pure)', () => {
  const body = (s: string) => Buffer.from(JSON.stringify({ data: s }));

  test('serves a page only at the version it was built from', () => {
    const cache = createPageCache({ maxBytes: 1 << 20 });
    cache.set('p\u0000t\u0000limit=50', '7/0', body('a'));
    assert.equal(cache.get('p\u0000t\u0000limit=50', '7/0')?.toString(), '{"data":"a"}');
    assert.equal(cache.get('p\u0000t\u0000limit=50', '8/0'), undefined, 'the thread moved on');
    assert.equal(cache.get('p\u0000t\u0000limit=50', '7/0'), undefined, 'a mismatching entry is dropped on sight');
    assert.deepEqual(
      { hits: cache.stats().hits, misses: cache.stats().misses, entries: cache.stats().entries },
      { hits: 1, misses: 2, entries: 0 },
    );
  });

  test('a page stored with a lifetime (decrypted pages) is not served after it, even at the same version', () => {
    const clock = { t: 1_000 };
    const cache = createPageCache({ maxBytes: 1 << 20, now: () => clock.t });
    cache.set('k', '3/0', body('opened'), 2_000);
    clock.t += 1_999;
    assert.ok(cache.get('k', '3/0'), 'within its lifetime');
    clock.t += 1;
    assert.equal(cache.get('k', '3/0'), undefined, 'expired');
    cache.set('k', '3/0', body('opened'), 0);
    assert.equal(cache.stats().entries, 0, 'a lifetime of 0 keeps nothing');
    cache.set('plain', '3/0', body('plain'));
    clock.t += 3_600_000;
    assert.ok(cache.get('plain', '3/0'), 'plain pages live as long as their version');
  });

  test('stays within its byte budget, least recently used first out', () => {
    const cache = createPageCache({ maxBytes: 4_000 });
    const big = Buffer.alloc(600, 'x');
    for (let i = 0; i < 5; i++) cache.set(`k${i}`, '1/0', big);
    assert.ok(cache.get('k0', '1/0'), 'k0 used: most recent now');
    for (let i = 5; i < 8; i++) cache.set(`k${i}`, '1/0', big);
    assert.ok(cache.stats().bytes <= 4_000);
    assert.ok(cache.get('k0', '1/0'), 'the recently used entry survived');
    assert.equal(cache.get('k1', '1/0'), undefined, 'the least recently used went first');
    assert.ok(cache.stats().evictions > 0);
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AppError } from '../../src/lib/errors';
import type { ApiPrincipal } from '../../src/lib/http/route';
import { assertAccess, isTrusted, type Access } from '../../src/modules/threads/thread-access';
import type { Role } from '../../src/modules/threads/threads-schemas';

type Policy = 'public' | 'members' | 'owners';

const principal = (kind: ApiPrincipal['kind'], userId: string | null = 'ann'): ApiPrincipal => ({
  type: 'api',
  projectId: 'prj_1',
  keyId: 'key_1',
  kind,
  userId,
  settings: {},
});

const allowed = (
  p: ApiPrincipal,
  thread: { read_policy: Policy; write_policy: Policy },
  role: Role | null,
  a: Access,
) => {
  try {
    assertAccess(p, thread, role, a);
    return true;
  } catch (err) {
    assert.ok(err instanceof AppError, 'a refusal is an AppError');
    assert.equal(err.kind, 'forbidden');
    return false;
  }
};

const POLICIES: Policy[] = ['public', 'members', 'owners'];
const ROLES: Array<Role | null> = [null, 'member', 'admin', 'owner'];

/** What the policy admits, written out per role rather than derived the way the code does it. */
const ADMITS: Record<Policy, Record<string, boolean>> = {
  public: { none: true, member: true, admin: true, owner: true },
  members: { none: false, member: true, admin: true, owner: true },
  owners: { none: false, member: false, admin: true, owner: true },
};

describe('thread access rules (unit, no database)', () => {
  test('only secret keys are trusted', () => {
    assert.equal(isTrusted(principal('secret')), true);
    assert.equal(isTrusted(principal('publishable')), false);
    assert.equal(isTrusted(principal('admin')), false);
  });

  test('a secret key may read, write and manage whatever the policies and its role', () => {
    for (const read_policy of POLICIES)
      for (const write_policy of POLICIES)
        for (const role of ROLES)
          for (const a of ['read', 'write', 'manage'] as const)
            assert.equal(allowed(principal('secret', null), { read_policy, write_policy }, role, a), true);
  });

  test('read follows read_policy, write follows write_policy, for every role', () => {
    const user = principal('publishable');
    for (const read_policy of POLICIES)
      for (const write_policy of POLICIES)
        for (const role of ROLES) {
          const r = role ?? 'none';
          const thread = { read_policy, write_policy };
          assert.equal(allowed(user, thread, role, 'read'), ADMITS[read_policy][r], `read ${read_policy} as ${r}`);
          assert.equal(allowed(user, thread, role, 'write'), ADMITS[write_policy][r], `write ${write_policy} as ${r}`);
        }
  });

  test('manage needs an owner or admin role, whatever the policies (public included)', () => {
    const user = principal('publishable');
    const open = { read_policy: 'public', write_policy: 'public' } as const;
    assert.equal(allowed(user, open, null, 'manage'), false);
    assert.equal(allowed(user, open, 'member', 'manage'), false);
    assert.equal(allowed(user, open, 'admin', 'manage'), true);
    assert.equal(allowed(user, open, 'owner', 'manage'), true);
  });

  test('the refusal names the user and what was missing', () => {
    const user = principal('publishable', 'bob');
    assert.throws(
      () => assertAccess(user, { read_policy: 'members', write_policy: 'owners' }, null, 'read'),
      (err: AppError) => /User "bob" is not allowed to read this thread \(policy: members\)/.test(err.message),
    );
    assert.throws(
      () => assertAccess(user, { read_policy: 'members', write_policy: 'owners' }, 'member', 'write'),
      (err: AppError) => /allowed to write this thread \(policy: owners\)/.test(err.message),
    );
    assert.throws(
      () => assertAccess(user, { read_policy: 'public', write_policy: 'public' }, 'member', 'manage'),
      (err: AppError) => /User "bob" is not an owner or admin of this thread/.test(err.message),
    );
    assert.throws(
      () =>
        assertAccess(principal('publishable', null), { read_policy: 'owners', write_policy: 'owners' }, null, 'read'),
      (err: AppError) => /User "" is not/.test(err.message),
    );
  });
});

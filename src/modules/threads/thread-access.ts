import { forbidden } from '../../lib/errors';
import type { ApiPrincipal } from '../../lib/http/route';
import type { Role } from './threads-schemas';

export type Access = 'read' | 'write' | 'manage';
type Policy = 'public' | 'members' | 'owners';

/** Secret keys have full access inside their project; other callers act as their end user. */
export const isTrusted = (p: ApiPrincipal) => p.kind === 'secret';

function allows(policy: Policy, role: Role | null): boolean {
  if (policy === 'public') return true;
  if (policy === 'members') return role !== null;
  return role === 'owner' || role === 'admin';
}

/** Throws unless the caller may read, write or manage a thread with these policies. */
export function assertAccess(
  principal: ApiPrincipal,
  thread: { read_policy: Policy; write_policy: Policy },
  role: Role | null,
  access: Access,
): void {
  if (isTrusted(principal)) return;
  const ok =
    access === 'read'
      ? allows(thread.read_policy, role)
      : access === 'write'
        ? allows(thread.write_policy, role)
        : role === 'owner' || role === 'admin';
  if (!ok) {
    const need =
      access === 'manage'
        ? 'an owner or admin of this thread'
        : `allowed to ${access} this thread (policy: ${access === 'read' ? thread.read_policy : thread.write_policy})`;
    throw forbidden(`User "${principal.userId ?? ''}" is not ${need}.`);
  }
}

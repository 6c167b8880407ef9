import type { PgListener } from '../../lib/pg-listener';

/** Sent (payload = project_id) when a project's keys, signing secret or settings change. */
export const KEY_CHANGES_CHANNEL = 'progressdb_keys';

/**
 * Makes revocations and settings changes take effect on this replica at once: every cache of
 * a project's key state is dropped on its notice, and everything after a LISTEN reconnect
 * (notices may have been missed). The key cache TTL remains the backstop.
 */
export async function watchKeyChanges(deps: {
  listener: Pick<PgListener, 'listen' | 'on'>;
  invalidate: (projectId?: string) => void;
}) {
  deps.listener.on('reconnected', () => deps.invalidate());
  await deps.listener.listen(KEY_CHANGES_CHANNEL, (projectId) => deps.invalidate(projectId || undefined));
}

import type { Db } from '../../lib/db';

export function createRealtimeStore() {
  return {
    /** A server-wide secret under `name`, storing `candidate` first if there is none (first writer wins). */
    async serverSecret(db: Db, name: string, candidate: string): Promise<string> {
      await db.raw(`insert into server_secrets (name, value) values (?, ?) on conflict (name) do nothing`, [
        name,
        candidate,
      ]);
      const row = (await db('server_secrets').first('value').where({ name })) as { value: string };
      return row.value;
    },

    /** Which of these keys can no longer be used: revoked, or their project deleted. */
    async deadKeys(db: Db, projectId: string, keyIds: string[]): Promise<string[]> {
      const { rows } = await db.raw(
        `select k.id from api_keys k join projects p on p.id = k.project_id
          where k.project_id = ? and k.id = any(?::text[]) and (k.revoked_at is not null or p.deleted_at is not null)`,
        [projectId, keyIds],
      );
      return (rows as Array<{ id: string }>).map((r) => r.id);
    },

    /** What verifying a realtime token needs: the live key's project secrets and settings. */
    async keyContext(db: Db, projectId: string, keyId: string) {
      const row = (await db('api_keys as k')
        .join('projects as p', 'p.id', 'k.project_id')
        .first('p.signing_secret', 'p.previous_signing_secret', 'p.previous_signing_secret_expires_at', 'p.settings')
        .where({ 'k.project_id': projectId, 'k.id': keyId })
        .whereNull('k.revoked_at')
        .whereNull('p.deleted_at')) as
        | {
            signing_secret: string;
            previous_signing_secret: string | null;
            previous_signing_secret_expires_at: string | null;
            settings: Record<string, unknown> | null;
          }
        | undefined;
      if (!row) return undefined;
      const previousValid =
        row.previous_signing_secret &&
        row.previous_signing_secret_expires_at &&
        Date.parse(row.previous_signing_secret_expires_at) > Date.now();
      return {
        signingSecrets: [row.signing_secret, ...(previousValid ? [row.previous_signing_secret!] : [])],
        settings: row.settings ?? {},
      };
    },
  };
}

export type RealtimeStore = ReturnType<typeof createRealtimeStore>;

import type { Db } from '../../lib/db';

export interface DeveloperRow {
  id: string;
  google_sub: string;
  email: string | null;
  name: string | null;
  avatar_url: string | null;
  created_at: string;
  last_login_at: string;
}

export function createDevelopersStore() {
  return {
    /**
     * The developer with this Google subject, created on first sign-in; later sign-ins refresh
     * the profile fields and last_login_at. One statement, so two concurrent first sign-ins
     * cannot create two developers.
     */
    async upsertByGoogleSub(
      db: Db,
      row: { id: string; google_sub: string; email: string | null; name: string | null; avatar_url: string | null },
    ) {
      const { rows } = await db.raw(
        `insert into developers (id, google_sub, email, name, avatar_url)
         values (?, ?, ?, ?, ?)
         on conflict (google_sub) do update set
           email = coalesce(excluded.email, developers.email),
           name = coalesce(excluded.name, developers.name),
           avatar_url = coalesce(excluded.avatar_url, developers.avatar_url),
           last_login_at = now()
         returning *, (xmax = 0) as created`,
        [row.id, row.google_sub, row.email, row.name, row.avatar_url],
      );
      return rows[0] as DeveloperRow & { created: boolean };
    },

    async get(db: Db, id: string): Promise<DeveloperRow | undefined> {
      return db('developers').first('*').where({ id });
    },

    /** Records a new session and forgets this developer's long-expired ones. */
    async insertSession(db: Db, developerId: string, sessionId: string, expiresAt: Date) {
      await db('developer_sessions')
        .where({ developer_id: developerId })
        .where('expires_at', '<', db.raw(`now() - interval '1 day'`))
        .delete();
      await db('developer_sessions').insert({ developer_id: developerId, id: sessionId, expires_at: expiresAt });
    },

    /** The developer, if this session of theirs is live. */
    async getBySession(db: Db, developerId: string, sessionId: string): Promise<DeveloperRow | undefined> {
      return db('developers as d')
        .join('developer_sessions as s', 's.developer_id', 'd.id')
        .first('d.*')
        .where({ 'd.id': developerId, 's.id': sessionId })
        .whereNull('s.revoked_at')
        .where('s.expires_at', '>', db.fn.now());
    },

    async revokeSession(db: Db, developerId: string, sessionId: string) {
      await db('developer_sessions')
        .where({ developer_id: developerId, id: sessionId })
        .whereNull('revoked_at')
        .update({ revoked_at: db.fn.now() });
    },
  };
}

export type DevelopersStore = ReturnType<typeof createDevelopersStore>;

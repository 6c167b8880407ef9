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
    async upsertByGoogleSub(db: Db, row: { id: string; google_sub: string; email: string | null; name: string | null; avatar_url: string | null }) {
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
  };
}

export type DevelopersStore = ReturnType<typeof createDevelopersStore>;

import type { Db } from '../../lib/db';

export function createServerSecretsStore() {
  return {
    /** The stored value under `name`, storing `candidate` first if there is none (first writer wins). */
    async getOrCreate(db: Db, name: string, candidate: string): Promise<string> {
      await db.raw(`insert into server_secrets (name, value) values (?, ?) on conflict (name) do nothing`, [
        name,
        candidate,
      ]);
      const row = await db('server_secrets').first('value').where({ name });
      return row.value as string;
    },
  };
}

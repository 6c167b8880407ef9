import type { Knex } from 'knex';
import { newId } from '../../lib/ids';
import { z } from '../../lib/zod';
import type { DeveloperRow, DevelopersStore } from './developers-store';

export const developerSchema = z
  .object({
    id: z.string(),
    email: z.string().nullable(),
    name: z.string().nullable(),
    avatar_url: z.string().nullable(),
    created_at: z.string(),
    last_login_at: z.string(),
  })
  .openapi('Developer');
export type DeveloperView = z.infer<typeof developerSchema>;

/** What the identity provider tells us about the person signing in. */
export interface SignInProfile {
  sub: string;
  email?: string | null;
  name?: string | null;
  avatarUrl?: string | null;
}

export const toDeveloperView = (d: DeveloperRow): DeveloperView => ({
  id: d.id,
  email: d.email,
  name: d.name,
  avatar_url: d.avatar_url,
  created_at: d.created_at,
  last_login_at: d.last_login_at,
});

// Only web URLs become avatars: the console renders them as <img src>.
const safeUrl = (u: string | null | undefined) => (u && /^https?:\/\//i.test(u) && u.length <= 2048 ? u : null);
const clip = (s: string | null | undefined, n: number) => (s ? s.slice(0, n) : null);

export function createDevelopersService(deps: { db: Knex; developersStore: DevelopersStore }) {
  const { db, developersStore: store } = deps;
  return {
    /** First sign-in creates the developer; later ones find the same one by Google subject. */
    async signIn(profile: SignInProfile) {
      const row = await store.upsertByGoogleSub(db, {
        id: newId('dev'),
        google_sub: profile.sub,
        email: clip(profile.email, 320),
        name: clip(profile.name, 200),
        avatar_url: safeUrl(profile.avatarUrl),
      });
      return { developer: toDeveloperView(row), created: row.created };
    },

    async get(id: string): Promise<DeveloperView | null> {
      const row = await store.get(db, id);
      return row ? toDeveloperView(row) : null;
    },

    /** A new console session; it ends at `expiresAt` (the maximum session age) or at sign-out. */
    async startSession(developerId: string, expiresAt: Date): Promise<string> {
      const sessionId = newId('ses');
      await store.insertSession(db, developerId, sessionId, expiresAt);
      return sessionId;
    },

    async getBySession(developerId: string, sessionId: string): Promise<DeveloperView | null> {
      const row = await store.getBySession(db, developerId, sessionId);
      return row ? toDeveloperView(row) : null;
    },

    endSession: (developerId: string, sessionId: string) => store.revokeSession(db, developerId, sessionId),
  };
}

export type DevelopersService = ReturnType<typeof createDevelopersService>;

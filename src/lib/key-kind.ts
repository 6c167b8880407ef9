import { z } from './zod';

/** The kinds of API key (SPEC §2): `sk_` secret, `pk_` publishable, `ak_` admin. */
export const keyKindSchema = z.enum(['secret', 'publishable', 'admin']);
export type KeyKind = z.infer<typeof keyKindSchema>;

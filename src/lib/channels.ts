/** Every PostgreSQL NOTIFY channel the service uses, in one place (one LISTEN connection per replica hears them). */
export const CHANNELS = {
  /** Pointers to committed thread-log events: {"p":[[project_id, thread_id, seq], …]}. */
  events: 'progressdb_events',
  /** A project whose keys, signing secret or settings changed: the payload is its id. */
  keys: 'progressdb_keys',
  /** Typing and presence, which are never stored. */
  ephemeral: 'progressdb_ephemeral',
} as const;

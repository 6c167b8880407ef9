/** A data key wrapped by one version of a KEK. */
export interface WrappedKey {
  kek_id: string;
  kek_version: number;
  wrapped: string;
}

export interface KekVersion {
  version: number;
  state: 'active' | 'retired';
  created_at: string;
}

export interface KekDescription {
  kek_id: string;
  current: number | null;
  versions: KekVersion[];
}

/**
 * What ProgressDB needs from a KMS. KEK ids are project ids; `context` binds a wrapped key to
 * where it belongs (project/thread/dek id), so a wrapped key copied elsewhere fails to unwrap.
 */
export interface Kms {
  readonly mode: 'embedded' | 'external';
  wrap(kekId: string, key: Buffer, context: string): Promise<WrappedKey>;
  unwrap(key: WrappedKey, context: string): Promise<Buffer>;
  /** The same key wrapped by the KEK's current version (never leaves the KMS in plaintext). */
  rewrap(key: WrappedKey, context: string): Promise<WrappedKey>;
  /** A new KEK version; new wraps use it from now on. */
  rotate(kekId: string): Promise<{ kek_id: string; version: number }>;
  /** Destroys an old version; refused for the current one. */
  retire(kekId: string, version: number): Promise<void>;
  describe(kekId: string): Promise<KekDescription>;
  /** False while the last call or health probe could not reach the KMS. */
  healthy(): boolean;
  close(): void;
}

/** The KMS could not be reached (or failed): retry later. */
export class KmsUnavailable extends Error {}
/** The KMS refused: unknown or retired key version, failed authentication of a wrapped key, bad caller. */
export class KmsRefused extends Error {
  constructor(
    message: string,
    readonly reason: 'retired' | 'integrity' | 'unknown' | 'denied' | 'invalid',
  ) {
    super(message);
  }
}

import {
  appendFileSync,
  mkdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
  openSync,
  fsyncSync,
  closeSync,
} from 'node:fs';
import path from 'node:path';
import type { KekRecord, KekStore } from './keyring';

interface FileKek {
  version: number;
  state: 'active' | 'retired';
  created_at: string;
  retired_at?: string;
  key?: string;
}

/**
 * The external KMS's KEKs: one JSON file in its data directory (mode 0600), replaced
 * atomically (write, fsync, rename) on every change. One KMS process owns the directory.
 */
export function createFileKekStore(dataDir: string): KekStore {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, 'keks.json');
  let all: Record<string, FileKek[]>;
  try {
    all = JSON.parse(readFileSync(file, 'utf8')) as Record<string, FileKek[]>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    all = {};
  }
  function save() {
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, JSON.stringify(all), { mode: 0o600 });
    const fd = openSync(tmp, 'r');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, file);
  }
  return {
    async load(kekId) {
      return (all[kekId] ?? []).map((k): KekRecord => ({
        version: k.version,
        state: k.state,
        created_at: k.created_at,
        key: k.key ? Buffer.from(k.key, 'base64') : undefined,
      }));
    },
    async add(kekId, version, key) {
      const list = (all[kekId] ??= []);
      if (list.some((k) => k.version === version)) return false;
      list.push({ version, state: 'active', created_at: new Date().toISOString(), key: key.toString('base64') });
      save();
      return true;
    },
    async retire(kekId, version) {
      const k = (all[kekId] ?? []).find((x) => x.version === version);
      if (!k) return;
      k.state = 'retired';
      k.retired_at = new Date().toISOString();
      delete k.key;
      save();
    },
  };
}

/** Append-only audit log (JSON lines, mode 0600): every request, who asked, for which key. */
export function createAuditLog(dataDir: string) {
  const file = path.join(dataDir, 'audit.log');
  return {
    file,
    write(entry: Record<string, unknown>) {
      appendFileSync(file, JSON.stringify({ at: new Date().toISOString(), ...entry }) + '\n', { mode: 0o600 });
    },
  };
}

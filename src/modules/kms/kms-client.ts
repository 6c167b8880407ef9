import type { Logger } from '../../lib/logger';
import { KmsRefused, KmsUnavailable, type KekDescription, type Kms, type WrappedKey } from './kms-types';

/**
 * KMS_MODE=external: the KMS is another process reached over HTTP with its own bearer token;
 * this process never holds a KEK. Any transport error or 5xx marks the KMS unhealthy until a
 * health probe (every `probeMs`) or a later call succeeds.
 */
export function createKmsClient(deps: {
  url: string;
  token: string;
  timeoutMs: number;
  probeMs: number;
  logger: Logger;
}): Kms {
  const base = deps.url.replace(/\/+$/, '');
  let up = true;
  let closed = false;

  function setUp(next: boolean) {
    if (next !== up)
      deps.logger[next ? 'info' : 'warn']({ kms: base }, next ? 'KMS reachable again' : 'KMS unreachable');
    up = next;
  }

  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${deps.token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(deps.timeoutMs),
      });
    } catch (err) {
      setUp(false);
      throw new KmsUnavailable(`KMS not reachable: ${(err as Error).message}`);
    }
    const text = await res.text().catch(() => '');
    if (res.status >= 500) {
      setUp(false);
      throw new KmsUnavailable(`KMS answered ${res.status}`);
    }
    setUp(true);
    let parsed: { reason?: KmsRefused['reason']; detail?: string } & Record<string, unknown> = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      /* empty or not JSON */
    }
    if (res.status >= 400) {
      const reason = res.status === 401 || res.status === 403 ? 'denied' : (parsed.reason ?? 'invalid');
      throw new KmsRefused(`KMS refused (${res.status}): ${parsed.detail ?? text.slice(0, 200)}`, reason);
    }
    return parsed as T;
  }

  const keyPath = (kekId: string) => `/v1/keys/${encodeURIComponent(kekId)}`;
  const probe = setInterval(() => {
    if (closed) return;
    fetch(`${base}/healthz`, { signal: AbortSignal.timeout(deps.timeoutMs) }).then(
      (r) => setUp(r.ok),
      () => setUp(false),
    );
  }, deps.probeMs);
  probe.unref();

  return {
    mode: 'external',
    async wrap(kekId, key, context) {
      return call<WrappedKey>('POST', `${keyPath(kekId)}/wrap`, { plaintext: key.toString('base64'), context });
    },
    async unwrap(w, context) {
      const r = await call<{ plaintext: string }>('POST', `${keyPath(w.kek_id)}/unwrap`, { ...w, context });
      return Buffer.from(r.plaintext, 'base64');
    },
    rewrap: (w, context) => call<WrappedKey>('POST', `${keyPath(w.kek_id)}/rewrap`, { ...w, context }),
    rotate: (kekId) => call<{ kek_id: string; version: number }>('POST', `${keyPath(kekId)}/rotate`),
    async retire(kekId, version) {
      await call('POST', `${keyPath(kekId)}/versions/${version}/retire`);
    },
    describe: (kekId) => call<KekDescription>('GET', keyPath(kekId)),
    healthy: () => up,
    close() {
      closed = true;
      clearInterval(probe);
    },
  };
}

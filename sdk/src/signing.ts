/** Lowercase hex HMAC-SHA256 of `userId` under `signingSecret` (Web Crypto: Node 20 and browsers). */
export async function signUserId(signingSecret: string, userId: string): Promise<string> {
  const enc = new TextEncoder();
  const key = await globalThis.crypto.subtle.importKey(
    'raw',
    enc.encode(signingSecret),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign'],
  );
  const mac = new Uint8Array(await globalThis.crypto.subtle.sign('HMAC', key, enc.encode(userId)));
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join('');
}

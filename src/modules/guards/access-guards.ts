import ipaddr from 'ipaddr.js';
import type { IncomingMessage } from 'node:http';
import { forbidden } from '../../lib/errors';
import type { ApiPrincipal, Guard } from '../../lib/http/route';
import type { ClientIp } from '../../lib/http/client-ip';
import { fromSettings } from '../projects/project-settings';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

interface AccessRules {
  /** null: no allowlist, every address may call. */
  ipRanges: Range[] | null;
  /** Normalised origins; '*' allows any. */
  origins: Set<string>;
  /** `scheme://host` of entries written `scheme://host:*`: that host on any port. */
  anyPort: Set<string>;
}

function parseRange(entry: string): Range | null {
  try {
    if (entry.includes('/')) {
      const [addr, bits] = ipaddr.parseCIDR(entry);
      // An IPv4-mapped IPv6 range is the IPv4 range it maps.
      if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
        return [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96];
      }
      return [addr, bits];
    }
    const addr = ipaddr.process(entry);
    return [addr, addr.kind() === 'ipv4' ? 32 : 128];
  } catch {
    return null;
  }
}

/** Canonical origin (what a browser sends): lowercase scheme and host, no default port. */
export function normaliseOrigin(origin: string): string | null {
  if (origin === '*') return '*';
  try {
    const u = new URL(origin);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : null;
  } catch {
    return null;
  }
}

/** `http://localhost:*` → `http://localhost` (the host on any port); null for any other entry. */
export function portWildcardBase(entry: string): string | null {
  const m = /^(https?:\/\/[^/\s]+):\*$/i.exec(entry);
  if (!m) return null;
  const base = normaliseOrigin(m[1]);
  return base !== null && base !== '*' && new URL(base).port === '' ? base : null;
}

/** `scheme://host` of an origin, without its port. */
const withoutPort = (origin: string) => {
  const u = new URL(origin);
  return `${u.protocol}//${u.hostname}`;
};

const rulesOf = fromSettings((s): AccessRules => ({
  ipRanges:
    s.ip_allowlist && s.ip_allowlist.length > 0
      ? s.ip_allowlist.map(parseRange).filter((r): r is Range => r !== null)
      : null,
  origins: new Set((s.allowed_origins ?? []).map(normaliseOrigin).filter((o): o is string => o !== null)),
  anyPort: new Set((s.allowed_origins ?? []).map(portWildcardBase).filter((o): o is string => o !== null)),
}));

export function ipAllowed(ip: string | undefined, ranges: Range[]): boolean {
  if (!ip) return false;
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.process(ip);
  } catch {
    return false;
  }
  return ranges.some(([range, bits]) => range.kind() === addr.kind() && addr.match(range, bits));
}

/** The client address is worked out (which allocates) only when the project has an allowlist. */
function checkIp(clientIp: ClientIp, req: IncomingMessage, principal: ApiPrincipal) {
  const { ipRanges } = rulesOf(principal.settings);
  if (ipRanges === null) return;
  const address = clientIp(req);
  if (!ipAllowed(address, ipRanges))
    throw forbidden(`Requests from ${address ?? 'an unknown address'} are not in this project's ip_allowlist.`);
}

function checkOrigin(origin: string | undefined, principal: ApiPrincipal) {
  if (principal.kind !== 'publishable' || origin === undefined) return;
  const { origins, anyPort } = rulesOf(principal.settings);
  if (origins.has('*')) return;
  const normal = normaliseOrigin(origin);
  if (normal === null || !(origins.has(normal) || (normal !== '*' && anyPort.has(withoutPort(normal))))) {
    throw forbidden(
      `Origin ${origin} is not in this project's allowed_origins; add it in the project settings to use a publishable key from that page.`,
    );
  }
}

/** The project's IP allowlist and the publishable keys' allowed origins, for every transport. */
export function createAccessGuards(deps: { clientIp: ClientIp }) {
  return {
    /**
     * The project's IP allowlist binds every one of its keys. It runs as a guard: after
     * authentication (the allowlist belongs to the key's project) and request validation, before
     * rate limiting and the handler; an address outside every listed range is refused.
     */
    ipAllowlist: ((req, _res, _spec, principal) => {
      if (principal.type === 'api') checkIp(deps.clientIp, req, principal);
    }) satisfies Guard,

    /**
     * Publishable keys are bound to the project's allowed_origins. A request without an Origin
     * header is not from a browser page (native app, server) and cannot be told apart from one
     * that forges its Origin anyway, so the binding only concerns browsers, where it matters: a
     * page on another site cannot use the key. No allowed_origins means no browser origin.
     */
    origin: ((req, _res, _spec, principal) => {
      if (principal.type === 'api') checkOrigin(req.get('origin'), principal);
    }) satisfies Guard,

    /** Both checks for callers outside the route factory (a WebSocket upgrade, an SSE token). */
    assertCaller(req: IncomingMessage, principal: ApiPrincipal) {
      checkIp(deps.clientIp, req, principal);
      const origin = req.headers.origin;
      checkOrigin(Array.isArray(origin) ? origin[0] : origin, principal);
    },
  };
}

export type AccessGuards = ReturnType<typeof createAccessGuards>;

/**
 * fast-check arbitraries for hostile requests against one route of the OpenAPI document.
 * Every generated request carries at least one component that no honest validator accepts
 * (so a 2xx is a finding, not noise), and only one, so it reaches the check it targets.
 */
import fc from 'fast-check';
import { encodeSegment, example, fillPath, wrongTypedValues, type ApiRoute, type JsonSchema } from './openapi-routes';

export interface HostileRequest {
  route: ApiRoute;
  category: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array | string;
}

export interface HostileContext {
  doc: any;
  /** Valid values for path parameters by name (real objects of the test project). */
  pathValues: Record<string, string>;
  /** Auth headers that pass authentication for this route (empty for session/none routes). */
  authFor(route: ApiRoute): Record<string, string>;
}

const INJECTIONS = [
  "' OR '1'='1",
  '1; DROP TABLE events; --',
  "') UNION SELECT signing_secret FROM projects --",
  "'; select pg_sleep(10); --",
  '" OR ""="',
  '$(reboot)',
  '`id`',
  '<script>alert(1)</script>',
  '../../etc/passwd',
  '..\\..\\windows\\win.ini',
  '\r\nSet-Cookie: pwned=1',
  '%0d%0aX-Injected: 1',
  '{{7*7}}',
  '${jndi:ldap://127.0.0.1/x}',
  '__proto__',
  'constructor',
  'null',
  '\u202e\u0000',
  '\ud800',
];

/** Characters no id, user id or reaction accepts (whitespace and controls). */
const POISON = [' ', '\u0000', '\u0001', '\u001b', '\u007f', '\n', '\t', '\u00a0', '\u2028', '\r'];

const poisoned = (s: string, at: number, poison: string) => {
  const i = s.length === 0 ? 0 : at % (s.length + 1);
  return s.slice(0, i) + poison + s.slice(i);
};

/** A path-parameter value that fails validation: injection/control strings or overlong ids. */
export const hostileParamValue = (schema: JsonSchema): fc.Arbitrary<{ value: string; kind: string }> =>
  fc.oneof(
    fc
      .tuple(fc.constantFrom(...INJECTIONS), fc.nat(), fc.constantFrom(...POISON))
      .map(([s, at, p]) => ({ value: poisoned(s, at, p), kind: 'injection' })),
    fc
      .tuple(fc.string({ unit: 'binary', maxLength: 40 }), fc.nat(), fc.constantFrom(...POISON))
      .map(([s, at, p]) => ({ value: poisoned(s, at, p), kind: 'control-chars' })),
    fc
      .integer({ min: Math.max(129, (schema.maxLength ?? 128) + 1), max: 4000 })
      .map((n) => ({ value: 'a'.repeat(n), kind: 'overlong-id' })),
  );

/** Raw path segments that are not valid percent-encoded UTF-8. */
const BAD_ENCODINGS = ['%FF', '%C0%80', '%ED%A0%80', '%', '%G1', 'a%', '%E2%82', '%F8%88%80%80%80'];

const MALFORMED_JSON = [
  '{',
  '{"a":',
  '{"a":1,}',
  "{'a':1}",
  '[1,2',
  '{"a":1}}',
  'NaN',
  'undefined',
  '{"a":01}',
  '{"a":"\\x00"}',
  '{"a":"\\ud800',
  '\u0000',
  '{"__proto__":',
  '[{]',
];

function truncatedJson(valid: string): fc.Arbitrary<string> {
  return fc.integer({ min: 1, max: Math.max(1, valid.length - 1) }).map((cut) => {
    const s = valid.slice(0, cut);
    try {
      JSON.parse(s);
      return s + ',';
    } catch {
      return s;
    }
  });
}

/** Bytes that are not UTF-8, in a position where JSON would need a value. */
const INVALID_UTF8 = [
  [0xff],
  [0xfe, 0xff],
  [0xc0, 0x80],
  [0xed, 0xa0, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0x80],
  [0xe2, 0x82],
];

const deepJson = (depth: number, kind: 'array' | 'object') =>
  kind === 'array' ? '['.repeat(depth) + '1' + ']'.repeat(depth) : '{"d":'.repeat(depth) + '1' + '}'.repeat(depth);

const json = (_: unknown): Record<string, string> => ({ 'content-type': 'application/json' });

/** Properties of an object schema that carry a declared type (so a wrong type is detectable). */
function typedProperties(ctx: HostileContext, body: JsonSchema): string[] {
  return Object.entries<JsonSchema>(body.properties ?? {})
    .filter(([, s]) => wrongTypedValues(ctx.doc, s).length > 0)
    .map(([k]) => k);
}

export function hostileFor(route: ApiRoute, ctx: HostileContext): fc.Arbitrary<HostileRequest> {
  const validPath = fillPath(route.path, ctx.pathValues);
  const base = (category: string, extra: Partial<HostileRequest>): HostileRequest => {
    const r: HostileRequest = {
      route,
      category,
      method: route.method,
      path: validPath,
      headers: { ...ctx.authFor(route) },
      ...extra,
      ...(extra.headers ? { headers: { ...ctx.authFor(route), ...extra.headers } } : {}),
    };
    // Counterexamples print as one line, not as the whole route object.
    Object.defineProperty(r, fc.toStringMethod, { value: () => describeHostile(r), enumerable: false });
    return r;
  };
  const validBody = route.body ? example(ctx.doc, route.body) : { a: 1 };
  const arbs: Array<fc.Arbitrary<HostileRequest>> = [];

  // Bodies the JSON parser refuses: every route (the parser runs before routing) that a client
  // can send a body to (fetch refuses bodies on GET).
  const takesBody = !route.streaming && route.method !== 'GET';
  if (takesBody) {
    arbs.push(
      fc
        .oneof(
          fc.constantFrom(...MALFORMED_JSON),
          truncatedJson(JSON.stringify({ ...(validBody as object), pad: 'x'.repeat(8) })),
        )
        .map((raw) => base('malformed-json', { headers: json(null), body: raw })),
      fc.tuple(fc.constantFrom(...INVALID_UTF8), fc.boolean()).map(([bytes, asKey]) => {
        const head = Buffer.from(asKey ? '{"a":1,' : '{"a":');
        return base('invalid-utf8', {
          headers: json(null),
          body: Buffer.concat([head, Buffer.from(bytes), Buffer.from('}')]),
        });
      }),
      fc.constantFrom('latin1', 'utf-16', 'x-unknown').map((charset) =>
        base('bad-charset', {
          headers: { 'content-type': `application/json; charset=${charset}` },
          body: JSON.stringify(validBody),
        }),
      ),
    );
  }

  // Bodies the route's schema refuses.
  if (route.body && takesBody) {
    const body = route.body;
    const typed = body.type === 'object' || body.properties ? typedProperties(ctx, body) : [];
    arbs.push(
      fc
        .constantFrom<unknown>([], [validBody])
        .map((v) => base('wrong-type', { headers: json(null), body: JSON.stringify(v) })),
      // The parser (strict mode) refuses top-level primitives before any route runs.
      fc
        .constantFrom<unknown>('a string', 42, true, null)
        .map((v) => base('non-object-json', { headers: json(null), body: JSON.stringify(v) })),
    );
    if (typed.length > 0) {
      arbs.push(
        fc
          .constantFrom(...typed)
          .chain((prop) =>
            fc.constantFrom(...wrongTypedValues(ctx.doc, body.properties[prop])).map((v) => ({ prop, v })),
          )
          .map(({ prop, v }) =>
            base('wrong-type', { headers: json(null), body: JSON.stringify({ ...(validBody as object), [prop]: v }) }),
          ),
      );
    }
    const required: string[] = body.required ?? [];
    if (required.length > 0) {
      arbs.push(
        fc.constantFrom(...required).map((prop) => {
          const b = { ...(validBody as Record<string, unknown>) };
          delete b[prop];
          return base('missing-required', { headers: json(null), body: JSON.stringify(b) });
        }),
      );
    }
    const bounded = Object.entries<JsonSchema>(body.properties ?? {}).filter(
      ([, s]) => typeof s.maxLength === 'number' || typeof s.maxItems === 'number',
    );
    if (bounded.length > 0) {
      arbs.push(
        fc.tuple(fc.constantFrom(...bounded), fc.integer({ min: 1, max: 200_000 })).map(([[prop, s], extra]) => {
          const v =
            typeof s.maxLength === 'number'
              ? 'x'.repeat(s.maxLength + extra)
              : Array.from({ length: s.maxItems + 1 + (extra % 50) }, () => example(ctx.doc, s.items));
          return base('huge', { headers: json(null), body: JSON.stringify({ ...(validBody as object), [prop]: v }) });
        }),
      );
    }
    // Bodies nested past MAX_JSON_DEPTH (32), at the top or inside a property; built as text
    // so the client needs no recursion.
    arbs.push(
      fc
        .tuple(
          fc.integer({ min: 40, max: 20_000 }),
          fc.constantFrom<'array' | 'object'>('array', 'object'),
          fc.boolean(),
        )
        .map(([depth, kind, inside]) => {
          const deep = deepJson(depth, kind);
          const obj =
            validBody && typeof validBody === 'object' && !Array.isArray(validBody)
              ? (validBody as Record<string, unknown>)
              : {};
          const key = Object.keys(obj)[0] ?? 'a';
          const text = inside ? JSON.stringify({ ...obj, [key]: '__DEEP__' }).replace('"__DEEP__"', deep) : deep;
          return base('deep', { headers: json(null), body: text });
        }),
    );
  }

  // Path parameters that fail validation, one at a time; raw bytes that are not UTF-8.
  if (route.pathParams.length > 0) {
    arbs.push(
      fc
        .constantFrom(...route.pathParams)
        .chain((p) => hostileParamValue(p.schema).map((h) => ({ p, h })))
        .map(({ p, h }) => base(h.kind, { path: fillPath(route.path, { ...ctx.pathValues, [p.name]: h.value }) })),
      fc.tuple(fc.constantFrom(...route.pathParams), fc.constantFrom(...BAD_ENCODINGS)).map(([p, raw]) =>
        base('invalid-utf8-path', {
          path: route.path.replace(/\{([^}]+)\}/g, (_, n: string) =>
            n === p.name ? raw : encodeURIComponent(ctx.pathValues[n] ?? 'x1'),
          ),
        }),
      ),
    );
  }

  // Query values the schema refuses.
  const badQuery = route.queryParams.flatMap((q) => badQueryValues(q.name, q.schema).map((v) => [q.name, v] as const));
  if (badQuery.length > 0) {
    arbs.push(
      fc.constantFrom(...badQuery).map(([name, v]) =>
        base(name === 'cursor' ? 'bad-cursor' : 'bad-query', {
          path: `${validPath}?${encodeSegment(name)}=${encodeSegment(v)}`,
        }),
      ),
    );
  }

  // Identity headers the authenticator refuses (API-key routes).
  if (route.auth === 'apiKey') {
    arbs.push(
      fc
        .oneof(
          fc.constantFrom('a b', 'a\tb', 'üser', 'user\u00ff', "x' OR '1'='1", ''),
          fc.integer({ min: 129, max: 5000 }).map((n) => 'u'.repeat(n)),
        )
        .map((u) => {
          const r = base('bad-user-header', { headers: { 'x-user-id': u, 'x-request-id': 'inj\tSet-Cookie: x=1' } });
          if (u === '') r.headers['x-user-id'] = ' ';
          return r;
        }),
      fc
        .constantFrom(
          'Bearer ',
          "Bearer ' OR 1=1 --",
          'Bearer sk_' + 'A'.repeat(49),
          'Basic YWRtaW46YWRtaW4=',
          'Bearer ' + 'k'.repeat(8000),
          'Bearer sk_\u00ff',
        )
        .map((a) => base('bad-key', { headers: { authorization: a } })),
    );
  }

  // Junk query parameters where they cannot reach a write: console routes (no session → 401)
  // and public GETs (which may answer 200).
  if (route.auth === 'session' || (route.auth === 'none' && route.method === 'GET') || arbs.length === 0) {
    arbs.push(
      fc
        .tuple(fc.constantFrom(...INJECTIONS), fc.constantFrom('q', 'limit', 'cursor', '__proto__', 'a[b]', ''))
        .map(([v, k]) =>
          base('junk-query', { path: `${validPath}?${encodeSegment(k)}=${encodeSegment(v)}&${encodeSegment(v)}=1` }),
        ),
    );
  }
  return fc.oneof(...arbs);
}

export const describeHostile = (r: HostileRequest) =>
  `${r.category}: ${r.method} ${r.path.slice(0, 300)} ${JSON.stringify(r.headers).slice(0, 200)} body=${
    r.body === undefined
      ? '-'
      : typeof r.body === 'string'
        ? JSON.stringify(r.body.slice(0, 200))
        : `<${r.body.length} bytes>`
  }`;

/** Query values that are wrong for a parameter's schema. */
export function badQueryValues(name: string, schema: JsonSchema): string[] {
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  const out: string[] = [];
  if (types.includes('integer') || types.includes('number')) {
    out.push('abc', '1e999', 'NaN', 'Infinity', '--1', '9'.repeat(40), "1' OR '1'='1", '\u0000');
    if (!types.includes('number')) out.push('1.5');
    if (typeof schema.minimum === 'number') out.push(String(schema.minimum - 1));
    if (typeof schema.maximum === 'number' && schema.maximum < Number.MAX_SAFE_INTEGER)
      out.push(String(schema.maximum + 1));
  }
  if (Array.isArray(schema.enum)) out.push('maybe', 'TRUE ', '\u0000', "true' --");
  if (types.includes('string') && typeof schema.maxLength === 'number') out.push('c'.repeat(schema.maxLength + 1));
  if (name === 'cursor')
    out.push(
      '!!!',
      'not-a-cursor',
      Buffer.from('{"a":1}').toString('base64url'),
      Buffer.from('["x", 1]').toString('base64url'),
      '%00',
      "' OR 1=1 --",
    );
  return out;
}

/**
 * Reads a live instance's GET /openapi.json into a route list, so suites that walk "every
 * route" pick up routes other modules add later without being edited.
 */

export type JsonSchema = Record<string, any>;

export interface ApiRoute {
  method: string;
  /** OpenAPI template: /v1/threads/{thread_id} */
  path: string;
  auth: 'none' | 'apiKey' | 'session';
  pathParams: Array<{ name: string; schema: JsonSchema }>;
  queryParams: Array<{ name: string; schema: JsonSchema; required: boolean }>;
  /** The application/json request body schema (dereferenced), if the route takes one. */
  body: JsonSchema | null;
  bodyRequired: boolean;
  /** Streaming routes (SSE, WebSocket upgrade) are not body-fuzzed. */
  streaming: boolean;
  responses: Record<string, { description?: string }>;
}

export function deref(doc: any, schema: JsonSchema | undefined, depth = 0): JsonSchema {
  if (!schema || depth > 20) return {};
  if (typeof schema.$ref === 'string') {
    const name = schema.$ref.replace('#/components/schemas/', '');
    return deref(doc, doc.components?.schemas?.[name], depth + 1);
  }
  return schema;
}

export async function loadRoutes(baseUrl: string): Promise<{ doc: any; routes: ApiRoute[] }> {
  const res = await fetch(`${baseUrl}/openapi.json`);
  if (res.status !== 200) throw new Error(`GET /openapi.json answered ${res.status}`);
  const doc = await res.json();
  const routes: ApiRoute[] = [];
  for (const [path, ops] of Object.entries<any>(doc.paths ?? {})) {
    for (const [method, op] of Object.entries<any>(ops)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue;
      const security: Array<Record<string, unknown>> = op.security ?? doc.security ?? [];
      const auth = security.length === 0 ? 'none' : 'session' in security[0] ? 'session' : 'apiKey';
      const params: any[] = op.parameters ?? [];
      const json = op.requestBody?.content?.['application/json'];
      const okContent = Object.values<any>(op.responses ?? {}).flatMap((r) => Object.keys(r?.content ?? {}));
      routes.push({
        method: method.toUpperCase(),
        path,
        auth,
        pathParams: params.filter((p) => p.in === 'path').map((p) => ({ name: p.name, schema: deref(doc, p.schema) })),
        queryParams: params
          .filter((p) => p.in === 'query')
          .map((p) => ({ name: p.name, schema: deref(doc, p.schema), required: Boolean(p.required) })),
        body: json ? deref(doc, json.schema) : null,
        bodyRequired: Boolean(op.requestBody?.required ?? json),
        streaming: okContent.includes('text/event-stream') || /\/ws$|\/tail$/.test(path),
        responses: op.responses ?? {},
      });
    }
  }
  return { doc, routes };
}

/** Fills a path template; values are percent-encoded. */
export function fillPath(template: string, values: Record<string, string>): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => encodeSegment(values[name] ?? 'x1'));
}

/** encodeURIComponent that survives lone surrogates (they become U+FFFD, as a browser would send). */
export const encodeSegment = (s: string) =>
  encodeURIComponent(s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'));

const typesOf = (s: JsonSchema): string[] => (Array.isArray(s.type) ? s.type : s.type ? [s.type] : []);

/** A plausible valid value for a schema (first enum value, minimums, required properties). */
export function example(doc: any, schema: JsonSchema | undefined, depth = 0, withOptional = false): unknown {
  const s = deref(doc, schema);
  if (depth > 8) return null;
  if (s.example !== undefined) return s.example;
  if (Array.isArray(s.enum)) return s.enum[0];
  if (s.const !== undefined) return s.const;
  const options = s.anyOf ?? s.oneOf;
  if (Array.isArray(options) && options.length) return example(doc, options[0], depth + 1, withOptional);
  if (Array.isArray(s.allOf) && s.allOf.length) return example(doc, s.allOf[0], depth + 1, withOptional);
  const t = typesOf(s).filter((x) => x !== 'null')[0];
  switch (t) {
    case 'object': {
      const out: Record<string, unknown> = {};
      const names = withOptional ? Object.keys(s.properties ?? {}) : (s.required ?? []);
      for (const name of names) out[name] = example(doc, s.properties?.[name], depth + 1, withOptional);
      return out;
    }
    case 'array': {
      const n = Math.max(1, s.minItems ?? 0);
      return Array.from({ length: n }, () => example(doc, s.items, depth + 1, withOptional));
    }
    case 'string': {
      const min = s.minLength ?? 1;
      return 'x1'.padEnd(Math.max(2, min), 'x');
    }
    case 'integer':
    case 'number':
      return s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : 1);
    case 'boolean':
      return true;
    default:
      return 'x1';
  }
}

/** Values whose JSON type is none of the schema's types (so any honest validator refuses them). */
export function wrongTypedValues(doc: any, schema: JsonSchema): unknown[] {
  const s = deref(doc, schema);
  const types = typesOf(s);
  if (types.length === 0) {
    if (Array.isArray(s.enum)) return ['__not_in_enum__', 12345, { x: 1 }, [s.enum[0]]];
    return [];
  }
  const candidates: Array<[string, unknown[]]> = [
    ['string', ['a string', '', '🤖', "' OR '1'='1"]],
    ['integer', [123456789, -1.5e300]],
    ['number', [3.25, -0.5]],
    ['boolean', [true, false]],
    ['object', [{}, { nested: { deeper: ['x'] } }]],
    ['array', [[], [1, 'two', null]]],
    ['null', [null]],
  ];
  const out: unknown[] = [];
  for (const [t, values] of candidates) {
    if (types.includes(t)) continue;
    if (t === 'integer' && types.includes('number')) continue;
    // An integer schema refuses fractions, so a fraction is the wrong "number" for it.
    out.push(...(t === 'number' && types.includes('integer') ? [3.25] : values));
  }
  if (Array.isArray(s.enum)) out.push('__not_in_enum__');
  return out;
}

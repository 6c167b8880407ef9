/**
 * `npm run sdk:generate`: writes sdk/src/generated/openapi.ts from the service's OpenAPI
 * document, built from the app's route registry (no server, no database connection).
 * test/sdk-types.test.ts fails when the committed file differs from what this produces.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import prettier from 'prettier';
import { createApp } from '../../src/app';
import { loadConfig } from '../../src/config';
import { createDb } from '../../src/lib/db';
import { createLogger } from '../../src/lib/logger';
import { buildOpenApiDocument } from '../../src/lib/openapi';

export const GENERATED_PATH = path.resolve(__dirname, '../src/generated/openapi.ts');

interface Schema {
  $ref?: string;
  type?: string | string[];
  enum?: unknown[];
  const?: unknown;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  nullable?: boolean;
  description?: string;
}

interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  schema?: Schema;
}

interface Operation {
  operationId?: string;
  summary?: string;
  security?: Array<Record<string, unknown>>;
  parameters?: Parameter[];
  requestBody?: { content?: Record<string, { schema?: Schema }> };
  responses?: Record<string, { content?: Record<string, { schema?: Schema }> }>;
}

interface Document {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
}

/** The OpenAPI document exactly as GET /openapi.json serves it (without a servers entry). */
export async function openApiDocument(): Promise<Document> {
  // The app is composed but never started: nothing connects to this address.
  const url = 'postgres://sdk-generate@127.0.0.1:1/none';
  const config = loadConfig({}, { NODE_ENV: 'test', DATABASE_URL: url, LOG_LEVEL: 'silent' });
  const db = createDb(url, 1);
  try {
    const app = createApp({ config, db, logger: createLogger('silent'), databaseUrl: url });
    return buildOpenApiDocument(app.registry) as unknown as Document;
  } finally {
    await db.destroy();
  }
}

const key = (name: string) => (/^[A-Za-z_$][\w$]*$/.test(name) ? name : JSON.stringify(name));

function doc(text: string | undefined, indent = '') {
  return text ? `${indent}/** ${text.replace(/\*\//g, '*\\/')} */\n` : '';
}

function typeOf(s: Schema | boolean | undefined): string {
  if (s === undefined || s === true) return 'unknown';
  if (s === false) return 'never';
  if (s.$ref) return `Schemas[${JSON.stringify(s.$ref.replace('#/components/schemas/', ''))}]`;
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.anyOf || s.oneOf) return (s.anyOf ?? s.oneOf)!.map((x) => `(${typeOf(x)})`).join(' | ');
  if (s.allOf) return s.allOf.map((x) => `(${typeOf(x)})`).join(' & ');
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  if (types.length === 0) return s.properties ? objectType(s) : 'unknown';
  const out = types.map((t) => {
    switch (t) {
      case 'string':
        return 'string';
      case 'integer':
      case 'number':
        return 'number';
      case 'boolean':
        return 'boolean';
      case 'null':
        return 'null';
      case 'array':
        return `Array<${typeOf(s.items)}>`;
      case 'object':
        return objectType(s);
      default:
        return 'unknown';
    }
  });
  if (s.nullable) out.push('null');
  return out.join(' | ');
}

function objectType(s: Schema): string {
  const props = Object.entries(s.properties ?? {});
  const required = new Set(s.required ?? []);
  const extra = s.additionalProperties;
  if (props.length === 0)
    return extra === undefined || extra === false ? 'Record<string, never>' : `Record<string, ${typeOf(extra)}>`;
  const lines = props.map(
    ([name, p]) => `${doc(p.description)}${key(name)}${required.has(name) ? '' : '?'}: ${typeOf(p)};`,
  );
  if (extra !== undefined && extra !== false) lines.push(`[key: string]: ${typeOf(extra)};`);
  return `{\n${lines.join('\n')}\n}`;
}

function paramsType(params: Parameter[], where: string): string {
  const ps = params.filter((p) => p.in === where);
  if (ps.length === 0) return 'never';
  return `{\n${ps.map((p) => `${key(p.name)}${p.required ? '' : '?'}: ${typeOf(p.schema)};`).join('\n')}\n}`;
}

function jsonSchemaOf(content: Record<string, { schema?: Schema }> | undefined): Schema | undefined {
  if (!content) return undefined;
  const type = Object.keys(content).find((t) => t.includes('json'));
  return type ? content[type].schema : undefined;
}

/** The SDK's surface: routes for secret and publishable keys (admin and console routes are not its business). */
const isDataPlane = (route: string, op: Operation) =>
  !route.startsWith('/v1/admin') && (op.security ?? []).some((s) => 'apiKey' in s);

/** Names of the component schemas `value` refers to, directly or through other schemas. */
function collectRefs(value: unknown, schemas: Record<string, Schema>, into: Set<string>): Set<string> {
  if (Array.isArray(value)) value.forEach((v) => collectRefs(v, schemas, into));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') {
        const name = v.replace('#/components/schemas/', '');
        if (!into.has(name)) {
          into.add(name);
          collectRefs(schemas[name], schemas, into);
        }
      } else collectRefs(v, schemas, into);
    }
  }
  return into;
}

/** The TypeScript source of sdk/src/generated/openapi.ts, formatted like the rest of the tree. */
export async function generateTypes(): Promise<string> {
  const document = await openApiDocument();
  const all = document.components?.schemas ?? {};
  const used = new Set<string>();
  for (const [route, methods] of Object.entries(document.paths))
    for (const op of Object.values(methods)) if (isDataPlane(route, op)) collectRefs(op, all, used);
  const schemas = Object.entries(all).filter(([name]) => used.has(name));
  const out: string[] = [
    "// Generated by `npm run sdk:generate` from the service's OpenAPI document. Do not edit.",
    '// test/sdk-types.test.ts fails when this file is stale.',
    '',
    '/** Named schemas (components.schemas) that the data-plane operations use. */',
    'export interface Schemas {',
    ...schemas.map(([name, s]) => `${doc(s.description)}${key(name)}: ${typeOf(s)};`),
    '}',
    '',
    '/** Data-plane operations (API keys): path and query parameters, JSON body, success response. */',
    'export interface Paths {',
  ];
  const operations: string[] = [];
  for (const [route, methods] of Object.entries(document.paths)) {
    const entries = Object.entries(methods).filter(([, op]) => isDataPlane(route, op));
    if (entries.length === 0) continue;
    out.push(`${JSON.stringify(route)}: {`);
    for (const [method, op] of entries) {
      const params = op.parameters ?? [];
      const success = Object.entries(op.responses ?? {}).find(([code]) => /^2\d\d$/.test(code));
      const body = jsonSchemaOf(op.requestBody?.content);
      const response = success ? jsonSchemaOf(success[1].content) : undefined;
      out.push(
        `${doc(op.summary)}${method}: {`,
        `path: ${paramsType(params, 'path')};`,
        `query: ${paramsType(params, 'query')};`,
        `body: ${body ? typeOf(body) : 'never'};`,
        `response: ${response ? typeOf(response) : success ? 'string' : 'never'};`,
        `status: ${success ? success[0] : 'never'};`,
        '};',
      );
      operations.push(
        `{ method: ${JSON.stringify(method.toUpperCase())}, path: ${JSON.stringify(route)}, operationId: ${JSON.stringify(op.operationId ?? null)} },`,
      );
    }
    out.push('};');
  }
  out.push(
    '}',
    '',
    '/** Every data-plane operation of the document, in document order. */',
    'export const OPERATIONS = [',
    ...operations,
    '] as const;',
    '',
  );
  const options = (await prettier.resolveConfig(GENERATED_PATH)) ?? {};
  return prettier.format(out.join('\n'), { ...options, parser: 'typescript' });
}

if (require.main === module) {
  generateTypes().then(
    (source) => {
      writeFileSync(GENERATED_PATH, source);
      process.stdout.write(`wrote ${path.relative(process.cwd(), GENERATED_PATH)}\n`);
    },
    (e: unknown) => {
      process.stderr.write(`sdk:generate failed: ${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}

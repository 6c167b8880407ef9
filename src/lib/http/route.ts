import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import { z } from '../zod';
import { AppError, badRequest } from '../errors';
import type { KeyKind } from '../key-kind';
import type { OpenAPIRegistry } from '../openapi';
import { inspectJson } from './json';
import { problemSchema, zodFieldErrors } from './problem';

export type AuthMode = 'none' | 'api' | 'secret' | 'admin' | 'developer';
export type RateClass = 'read' | 'write' | 'auth';

/** Who is calling: an API key (optionally acting as an end user) or a signed-in developer. */
export type Principal =
  | { type: 'anonymous' }
  | {
      type: 'api';
      projectId: string;
      keyId: string;
      kind: KeyKind;
      userId: string | null;
      settings: Record<string, unknown>;
    }
  | { type: 'developer'; developerId: string };

export type ApiPrincipal = Extract<Principal, { type: 'api' }>;
export type DeveloperPrincipal = Extract<Principal, { type: 'developer' }>;

type Schema = z.ZodType;
type Infer<S> = S extends Schema ? z.infer<S> : undefined;

export interface RouteSpec<P extends Schema | undefined, Q extends Schema | undefined, B extends Schema | undefined> {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  /** Express syntax: /v1/threads/:thread_id */
  path: string;
  /** The operation's stable name in the OpenAPI document (and the SDK built from it). */
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  auth: AuthMode;
  rateClass?: RateClass;
  params?: P;
  query?: Q;
  body?: B;
  /** Turns a text/plain body into this value before validation. */
  textBody?: (text: string) => unknown;
  /** Answers through `idempotency.reply`: documents Idempotency-Key, Idempotent-Replayed and their 409/422. */
  idempotent?: boolean;
  /** Request headers the handler reads beyond the common ones (documented as header parameters). */
  headers?: z.ZodObject;
  /** Error statuses beyond those the route's shape implies (see `errorStatuses`). */
  errors?: number[];
  responses: Record<number, { description: string; schema?: Schema; contentType?: string }>;
}

export interface HandlerInput<P, Q, B, A extends Principal> {
  params: P;
  query: Q;
  body: B;
  principal: A;
  header(name: string): string | undefined;
}

export interface Reply {
  status?: number;
  body?: unknown;
  /** Sent as text/plain instead of JSON. */
  text?: string;
  /**
   * The JSON body already serialised (a cached page): sent as these bytes, never encoded again.
   * `body`, when also given, is what they encode (checked against the schema like any body).
   */
  json?: Buffer;
  headers?: Record<string, string>;
}

type PrincipalFor<M extends AuthMode> = M extends 'api' | 'secret' | 'admin'
  ? ApiPrincipal
  : M extends 'developer'
    ? DeveloperPrincipal
    : Principal;

/** Runs after authentication and validation, before the handler (rate limits, IP and origin guards). */
export type Guard = (
  req: Request,
  res: Response,
  spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>,
  principal: Principal,
) => Promise<void> | void;

export interface RouteFactoryDeps {
  registry: OpenAPIRegistry;
  authenticate: Record<AuthMode, (req: Request, res: Response) => Promise<Principal>>;
  guards: Guard[];
  maxJsonDepth: number;
  /** The largest request body read (JSON or text), in bytes. */
  maxRequestBytes: number;
  /**
   * Check every JSON response against the schema its route declares for that status (in
   * development and test), so the OpenAPI document cannot drift from what the API returns.
   */
  validateResponses?: boolean;
}

const JSON_TYPE = 'application/json; charset=utf-8';

/** On each route handler the factory gives express: the same route as a function of req and res that rejects on error. */
export const DIRECT = Symbol('route factory run');
export type DirectRun = (req: Request, res: Response) => Promise<void>;
const MAX_CACHED_QUERIES = 1_000;
const MAX_CACHED_PARAMS = 10_000;

const toOpenApiPath = (p: string) => p.replace(/:([A-Za-z_]+)/g, '{$1}');

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Bad request: invalid path, query, header or body (problem+json with errors[] per field)',
  401: 'No valid credentials',
  403: 'The credentials may not do this (key kind, membership, policy, IP allowlist or origin)',
  404: 'The thread, message or other resource named in the path does not exist (or is not visible)',
  409: 'Conflicts with the current state (an id already used with other content, a deleted message, an Idempotency-Key in flight)',
  410: 'Gone: the requested events were removed by retention',
  412: 'Precondition failed: If-Match names another version than the current one',
  413: 'The body is larger than this server accepts',
  415: 'The body is not in a supported media type',
  422: 'Well-formed but refused (a reference that does not resolve, a setting the service does not enforce, an Idempotency-Key reused with another request)',
  429: 'A rate limit or quota is used up; retry after Retry-After seconds',
  503: 'The database is not reachable right now; retry after Retry-After seconds',
};

/** The error statuses a route can answer, from its shape; `spec.errors` adds what only it knows. */
export function errorStatuses(
  spec: Pick<
    RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>,
    'auth' | 'params' | 'body' | 'idempotent' | 'errors'
  >,
) {
  const statuses = new Set([400, 429, 503, ...(spec.errors ?? [])]);
  if (spec.auth !== 'none') [401, 403].forEach((x) => statuses.add(x));
  if (spec.params) statuses.add(404);
  if (spec.body) [413, 415].forEach((x) => statuses.add(x));
  if (spec.idempotent) [409, 422].forEach((x) => statuses.add(x));
  return [...statuses].sort((a, b) => a - b);
}

const headerRef = (name: string) => ({ $ref: `#/components/headers/${name}` });

/** Request headers every route of this kind reads. */
function requestHeaders(spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>) {
  const shape: Record<string, z.ZodType> = {
    'X-Request-Id': z.string().max(128).optional().openapi({
      description:
        'Your id for this request (1–128 of A–Z a–z 0–9 . _ : -); echoed in the response, else one is generated',
    }),
  };
  if (spec.auth === 'api' || spec.auth === 'secret') {
    shape['X-User-ID'] = z.string().optional().openapi({
      description:
        'The end user the call acts for (1–128 printable ASCII, no spaces): required with publishable keys, optional with secret keys',
    });
    shape['X-User-Signature'] = z.string().optional().openapi({
      description: 'Hex HMAC-SHA256 of X-User-ID under the project signing secret: required with publishable keys',
    });
  }
  if (spec.idempotent)
    shape['Idempotency-Key'] = z.string().min(1).max(255).optional().openapi({
      description: 'Makes retries of this request return the first result (1–255 printable ASCII characters)',
    });
  return z.object({ ...shape, ...(spec.headers?.shape ?? {}) });
}

/** Validates one input with its zod schema; a failure is a bad_request with field errors. */
export function parse<S extends Schema>(schema: S, value: unknown, where: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const errors = zodFieldErrors(result.error, where);
    throw badRequest(`Invalid ${where}: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, errors);
  }
  return result.data;
}

/**
 * One declaration per route: the same zod schemas validate the request and describe it in
 * the OpenAPI document. Handlers receive validated input and return a Reply; they never see
 * req/res, except `stream` handlers (SSE), which own the response.
 */
export function createRouteFactory(deps: RouteFactoryDeps) {
  function register(spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>) {
    const responses: Record<string, unknown> = {};
    const common = {
      'X-Request-Id': headerRef('X-Request-Id'),
      RateLimit: headerRef('RateLimit'),
      'RateLimit-Policy': headerRef('RateLimit-Policy'),
    };
    for (const [status, r] of Object.entries(spec.responses)) {
      const headers =
        spec.idempotent && Number(status) < 300
          ? { ...common, 'Idempotent-Replayed': headerRef('Idempotent-Replayed') }
          : common;
      responses[status] = r.schema
        ? {
            description: r.description,
            headers,
            content: { [r.contentType ?? 'application/json']: { schema: r.schema } },
          }
        : { description: r.description, headers };
    }
    const problem = { 'application/problem+json': { schema: problemSchema } };
    for (const status of errorStatuses(spec)) {
      const retry = status === 429 || status === 503 ? { 'Retry-After': headerRef('Retry-After') } : {};
      responses[status] = {
        description: ERROR_DESCRIPTIONS[status] ?? 'Error',
        headers: { ...common, ...retry },
        content: problem,
      };
    }
    responses.default = {
      description: 'Error',
      headers: { 'X-Request-Id': headerRef('X-Request-Id') },
      content: problem,
    };
    const body = spec.body
      ? {
          content: {
            'application/json': { schema: spec.body },
            ...(spec.textBody ? { 'text/plain': { schema: z.string() } } : {}),
          },
        }
      : undefined;
    deps.registry.registerPath({
      method: spec.method,
      path: toOpenApiPath(spec.path),
      operationId: spec.operationId,
      summary: spec.summary,
      description: spec.description,
      tags: spec.tags,
      security:
        spec.auth === 'none'
          ? []
          : spec.auth === 'developer'
            ? [{ session: [] }]
            : [{ apiKey: [] }, { apiKeyHeader: [] }],
      request: {
        params: spec.params as z.ZodObject | undefined,
        query: spec.query as z.ZodObject | undefined,
        headers: requestHeaders(spec),
        body,
      },
      responses: responses as never,
    });
  }

  // Bodies are read only after the caller is authenticated (headers first, then the body), so
  // an unauthenticated client cannot make the server buffer and parse MAX_REQUEST_BYTES.
  const parsers: RequestHandler[] = [
    express.json({ limit: deps.maxRequestBytes, type: ['application/json', 'application/*+json'] }),
    express.text({ limit: deps.maxRequestBytes, type: 'text/plain' }),
  ];
  const readBody = (req: Request, res: Response): Promise<void> | undefined => {
    // No body (type-is's test, which the parsers apply first): they would only set req.body to
    // undefined, at two promises and two parser calls per GET. Synchronous then: no promise either.
    if (req.headers['transfer-encoding'] === undefined && req.headers['content-length'] === undefined) {
      if (!('body' in (req as object))) req.body = undefined;
      return undefined;
    }
    return readWithParsers(req, res);
  };
  const readWithParsers = async (req: Request, res: Response) => {
    for (const parse of parsers)
      await new Promise<void>((resolve, reject) => parse(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
  };

  // Validated query strings per schema: clients repeat the same few (`?limit=50`), and parsing
  // them (the query parser, then zod with coercion and refinements) was ~2 % of a cached read's
  // CPU. The result is a pure function of the raw query string; only flat results are kept, and
  // each request gets its own copy. Bounded: cleared when full.
  const parsedQueries = new WeakMap<Schema, Map<string, Record<string, unknown>>>();
  function parseQuery(schema: Schema, req: Request): unknown {
    const url = req.url;
    const at = url.indexOf('?');
    const raw = at < 0 ? '' : url.slice(at + 1);
    let cache = parsedQueries.get(schema);
    const hit = cache?.get(raw);
    if (hit) return { ...hit };
    const parsed: unknown = parse(schema, { ...req.query }, 'query');
    if (
      parsed &&
      typeof parsed === 'object' &&
      Object.values(parsed).every((v) => v === null || typeof v !== 'object')
    ) {
      if (!cache) parsedQueries.set(schema, (cache = new Map()));
      if (cache.size >= MAX_CACHED_QUERIES) cache.clear();
      cache.set(raw, { ...(parsed as Record<string, unknown>) });
    }
    return parsed;
  }

  // Validated path params the same way, per route and raw values: reads name the same threads
  // over and over, and zod's parse of an id was ~1 % of a cached read's CPU. One route's params
  // always have the same names in the same order, so the values alone (length-prefixed) are the
  // key. More distinct values than query strings (one per thread), so a larger bound.
  const parsedParams = new WeakMap<object, Map<string, Record<string, unknown>>>();
  function parseParams(
    spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>,
    req: Request,
  ): unknown {
    const schema = spec.params!;
    const raw = req.params as Record<string, unknown>;
    let key = '';
    for (const k in raw) {
      const v = raw[k];
      if (typeof v !== 'string') return parse(schema, raw, 'path');
      key += `${v.length}:${v}`;
    }
    let cache = parsedParams.get(spec);
    const hit = cache?.get(key);
    if (hit) return { ...hit };
    const parsed: unknown = parse(schema, raw, 'path');
    if (
      parsed &&
      typeof parsed === 'object' &&
      Object.values(parsed).every((v) => v === null || typeof v !== 'object')
    ) {
      if (!cache) parsedParams.set(spec, (cache = new Map()));
      if (cache.size >= MAX_CACHED_PARAMS) cache.clear();
      cache.set(key, { ...(parsed as Record<string, unknown>) });
    }
    return parsed;
  }

  async function prepare(
    spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>,
    req: Request,
    res: Response,
  ) {
    const principal = await deps.authenticate[spec.auth](req, res);
    // Every route reads (and bounds, and checks the charset of) a body it is sent, declared or not.
    const reading = readBody(req, res);
    if (reading) await reading;
    const params = spec.params ? parseParams(spec, req) : undefined;
    const query = spec.query ? parseQuery(spec.query, req) : undefined;
    let body: unknown;
    if (spec.body) {
      let raw: unknown = req.body;
      const hasBody = Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined;
      if (hasBody && !req.is('application/json') && !(spec.textBody && req.is('text/plain'))) {
        throw new AppError(
          'unsupported_media_type',
          `Send the body as application/json${spec.textBody ? ' or text/plain' : ''} (got ${req.get('content-type') ?? 'no Content-Type'}).`,
        );
      }
      if (typeof raw === 'string' && spec.textBody) raw = spec.textBody(raw);
      if (raw === undefined && !spec.body.safeParse(undefined).success)
        throw badRequest('A JSON request body is required.');
      const flaw = inspectJson(raw, deps.maxJsonDepth);
      if (flaw === 'too_deep') throw badRequest(`The JSON body nests deeper than ${deps.maxJsonDepth} levels.`);
      if (flaw === 'nul') throw badRequest('Strings in the body must not contain the NUL character (\\u0000).');
      body = parse(spec.body, raw, 'body');
    }
    // Most guards have nothing to wait for on most requests: await only the promises they return.
    for (const guard of deps.guards) {
      const pending = guard(req, res, spec, principal);
      if (pending) await pending;
    }
    return { params, query, body, principal, header: (name: string) => req.get(name) };
  }

  /** A response that does not match its declared schema is a bug: a 500, logged, in development and test. */
  function checkResponse(
    spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>,
    r: Reply,
    status: number,
  ) {
    if (!deps.validateResponses || r.text !== undefined) return;
    const declared = spec.responses[status];
    if (!declared)
      throw new Error(`${spec.method.toUpperCase()} ${spec.path} answered ${status}, which it does not declare`);
    if (!declared.schema || r.body === undefined) return;
    const result = declared.schema.safeParse(r.body);
    if (!result.success) {
      const errors = zodFieldErrors(result.error, 'response');
      throw new Error(
        `${spec.method.toUpperCase()} ${spec.path} ${status} does not match its declared schema: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`,
      );
    }
  }

  function send(
    spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>,
    req: Request,
    res: Response,
    reply: Reply | void,
  ) {
    const r = reply ?? {};
    const status = r.status ?? defaultStatus(spec);
    checkResponse(spec, r, status);
    if (r.headers) for (const k in r.headers) res.setHeader(k, r.headers[k]);
    res.status(status);
    if (r.text !== undefined) res.type('text/plain; charset=utf-8').send(r.text);
    // The same Content-Type (and so the same ETag) as a string body sent below.
    else if (r.json !== undefined) {
      res.setHeader('content-type', JSON_TYPE);
      setCachedEtag(res, r.json);
      sendJson(req, res, r.json);
    } else if (r.body === undefined) res.end();
    else res.type('application/json').send(JSON.stringify(r.body));
  }

  /**
   * What express's res.send does with a Buffer whose Content-Type and ETag are set, without
   * its type, charset and freshness work, when the request is not conditional: Content-Length,
   * then the bytes (none for HEAD). A conditional request (If-None-Match → 304) and a bodiless
   * status go through res.send itself.
   */
  function sendJson(req: Request, res: Response, body: Buffer) {
    const h = req.headers;
    const s = res.statusCode;
    if (
      h['if-none-match'] !== undefined ||
      h['if-modified-since'] !== undefined ||
      s === 204 ||
      s === 304 ||
      s < 200 ||
      s >= 300
    ) {
      res.send(body);
      return;
    }
    res.setHeader('Content-Length', String(body.length));
    if (req.method === 'HEAD') res.end();
    else res.end(body);
  }

  // The ETag express would compute (a SHA-1 of the body), kept per body: a cached page is sent
  // as the same Buffer many times, and hashing it each time was ~2 % of a cached read's CPU.
  const etags = new WeakMap<Buffer, string | null>();
  function setCachedEtag(res: Response, body: Buffer) {
    const etagFn = res.app.get('etag fn') as ((body: Buffer, encoding?: string) => string | undefined) | undefined;
    if (typeof etagFn !== 'function' || res.getHeader('ETag') !== undefined) return;
    let tag = etags.get(body);
    if (tag === undefined) {
      tag = etagFn(body) ?? null;
      etags.set(body, tag);
    }
    if (tag) res.setHeader('ETag', tag);
  }

  /** The handler express runs; the same function, unwrapped, for direct dispatch (direct-dispatch.ts). */
  const asHandler = (run: DirectRun) =>
    Object.assign((req: Request, res: Response, next: NextFunction) => void run(req, res).catch(next), {
      [DIRECT]: run,
    });

  const defaultStatus = (spec: { responses: Record<number, unknown> }) =>
    Number(Object.keys(spec.responses).find((s) => Number(s) < 300) ?? 200);

  return {
    route<P extends Schema | undefined, Q extends Schema | undefined, B extends Schema | undefined, M extends AuthMode>(
      router: Router,
      spec: RouteSpec<P, Q, B> & { auth: M },
      handler: (input: HandlerInput<Infer<P>, Infer<Q>, Infer<B>, PrincipalFor<M>>) => Promise<Reply | void>,
    ) {
      const s = spec as RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>;
      register(s);
      const run: DirectRun = async (req, res) => {
        const input = await prepare(s, req, res);
        send(s, req, res, await handler(input as never));
      };
      router[spec.method](spec.path, asHandler(run));
    },

    /** A route that owns its response (Server-Sent Events). */
    stream<P extends Schema | undefined, Q extends Schema | undefined, M extends AuthMode>(
      router: Router,
      spec: RouteSpec<P, Q, undefined> & { auth: M },
      handler: (
        input: HandlerInput<Infer<P>, Infer<Q>, undefined, PrincipalFor<M>>,
        req: Request,
        res: Response,
      ) => Promise<void>,
    ) {
      const s = spec as RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>;
      register(s);
      const run: DirectRun = async (req, res) => handler((await prepare(s, req, res)) as never, req, res);
      router[spec.method](spec.path, asHandler(run));
    },
  };
}

export type RouteFactory = ReturnType<typeof createRouteFactory>;

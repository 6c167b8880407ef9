import type { ErrorRequestHandler, Express, Request, Response, Router } from 'express';
import { literalStart } from './prefix-routers';
import { DIRECT, type DirectRun } from './route';

interface MatchResult {
  params: Record<string, string>;
}
interface RouteLike {
  path: string;
  stack: Array<{ handle: unknown }>;
  _handlesMethod(method: string): boolean;
}
interface LayerLike {
  route?: RouteLike;
  rawPath?: unknown;
  matchers: Array<(path: string) => MatchResult | false>;
  handle?: unknown;
}

/** One layer of a router, as the table walks it: a declared route it can run itself, or anything else. */
interface Entry {
  /** The lower-case literal start of the layer's path: a path that does not begin with it cannot match. */
  literal: string;
  matchers: LayerLike['matchers'];
  route: RouteLike | undefined;
  /** The route factory's handler when the layer is one declared route and nothing else. */
  run: DirectRun | undefined;
}

export interface DirectDispatchOptions {
  /** The module routers, in the order `prefixRouters` enters them, each with its literal prefixes. */
  routers: Array<{ router: Router; prefixes: string[] }>;
  /** Paths served here (and those under them), lower-case; the rest always go through express. */
  paths: string[];
  /** Paths under `paths` that app-level middleware other than `front` applies to: left to express. */
  except: string[];
  /** What the app's middleware does before its routers for these paths (request id, log, headers, CORS). */
  front(req: Request, res: Response): void;
  /** The app's error middleware. */
  onError: ErrorRequestHandler;
}

// parseurl (express's req.path) leaves a path with these characters to url.parse: left to express.
const UNUSUAL = /[\s#\u00a0\ufeff]/;
/** Paths whose match is remembered, per method (emptied when full), and the longest remembered. */
const MAX_REMEMBERED = 10_000;
const MAX_REMEMBERED_LENGTH = 256;

type Found = { entry: Entry; params: Record<string, string> } | null;

const under = (path: string, prefixes: string[]) => {
  for (const p of prefixes) if (path.startsWith(p) && (path.length === p.length || path[p.length] === '/')) return true;
  return false;
};

/**
 * Serves requests for routes declared through the route factory without express's router:
 * the routes are found in the same routers' layers, in the same order, with express's own
 * matchers (case-insensitive, optional trailing slash, percent-decoded params), and then the
 * same front work, route handler and error middleware run as express would run them. A request
 * is left to express (returns false) whenever anything else could take part: another method,
 * a path no declared route matches first, a middleware or foreign route on its way, a param
 * that fails to decode (express answers those 400 through the error middleware). What it skips
 * is the per-request layer walk of the app's router and each module router, with their
 * closures, `next` chains and promises.
 */
export function createDirectDispatch(app: Express, options: DirectDispatchOptions) {
  const tables = options.routers.map(({ router, prefixes }) => ({
    prefixes,
    entries: ((router as unknown as { stack: LayerLike[] }).stack ?? []).map((layer): Entry => {
      const route = layer.route;
      const only = route?.stack.length === 1 ? (route.stack[0].handle as { [DIRECT]?: DirectRun }) : undefined;
      const literal = typeof layer.rawPath === 'string' ? literalStart(layer.rawPath) : '';
      return { literal, matchers: layer.matchers, route, run: only?.[DIRECT] };
    }),
  }));
  const paths = options.paths.map((p) => p.toLowerCase());
  const except = options.except.map((p) => p.toLowerCase());
  const { front, onError } = options;
  const request = app.request as object;
  const response = app.response as object;
  const ignore = () => undefined;

  /** The declared route that express would run first for this request, with its params; null when unsure. */
  function find(method: string, path: string): { entry: Entry; params: Record<string, string> } | null {
    const lower = path.toLowerCase();
    if (!under(lower, paths) || under(lower, except)) return null;
    for (const table of tables) {
      let enters = false;
      for (const p of table.prefixes) if (lower.startsWith(p)) enters = true;
      if (!enters) continue;
      for (const entry of table.entries) {
        if (!lower.startsWith(entry.literal)) continue;
        let match: MatchResult | false = false;
        try {
          for (let i = 0; !match && i < entry.matchers.length; i++) match = entry.matchers[i](path);
        } catch {
          return null;
        }
        if (!match) continue;
        if (!entry.run || !entry.route) return null;
        if (!entry.route._handlesMethod(method)) continue;
        return { entry, params: match.params };
      }
    }
    return null;
  }

  // What `find` answered, per method and path: a pure function of both (the tables are fixed at
  // startup), and clients read the same threads' paths over and over. Each request gets its own
  // copy of the params (below).
  const remembered = new Map<string, Map<string, Found>>();
  function findRemembered(method: string, path: string): Found {
    if (path.length > MAX_REMEMBERED_LENGTH) return find(method, path);
    let byPath = remembered.get(method);
    if (!byPath) remembered.set(method, (byPath = new Map()));
    let found = byPath.get(path);
    if (found === undefined) {
      found = find(method, path);
      if (byPath.size >= MAX_REMEMBERED) byPath.clear();
      byPath.set(path, found);
    }
    return found;
  }

  /** Serves the request and returns true, or returns false for express to serve it. */
  return function dispatch(req: Request, res: Response): boolean {
    const method = req.method;
    if (method === 'OPTIONS') return false;
    const url = req.url;
    if (url.charCodeAt(0) !== 47 /* / */) return false;
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (UNUSUAL.test(path)) return false;
    const found = findRemembered(method, path);
    if (!found) return false;

    // What express's app.handle and router set up before a route runs.
    if (app.enabled('x-powered-by')) res.setHeader('X-Powered-By', 'Express');
    req.res = res;
    res.req = req;
    // Already in place when the server came from app.listen (lib/http/app-server.ts): setting a
    // prototype reshapes the object, which costs far more than this request's own work.
    if (Object.getPrototypeOf(req) !== request) Object.setPrototypeOf(req, request);
    if (Object.getPrototypeOf(res) !== response) Object.setPrototypeOf(res, response);
    if (!res.locals) res.locals = Object.create(null) as Record<string, unknown>;
    req.baseUrl = '';
    req.originalUrl = req.originalUrl || url;
    req.params = { ...found.params };
    (req as { route?: unknown }).route = found.entry.route;

    try {
      front(req, res);
      found.entry.run!(req, res).catch((err: unknown) => onError(err, req, res, ignore));
    } catch (err) {
      onError(err, req, res, ignore);
    }
    return true;
  };
}

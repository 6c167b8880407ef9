import type { Request, RequestHandler, Response, NextFunction, Router } from 'express';

interface StackLayer {
  rawPath?: unknown;
  handle?: { stack?: StackLayer[] };
}

/** The literal start of an express path pattern: everything before its first parameter, wildcard or group. */
export const literalStart = (pattern: string) => {
  const at = pattern.search(/[:*{(\\]/);
  return (at < 0 ? pattern : pattern.slice(0, at)).toLowerCase();
};

/**
 * The literal path prefixes a router can match, read from its layers (nested routers mounted
 * without a path included), or null when some layer could match any path (a path-less
 * middleware, a RegExp path).
 */
export function routerPrefixes(router: object): string[] | null {
  const prefixes = new Set<string>();
  for (const layer of (router as { stack?: StackLayer[] }).stack ?? []) {
    const paths = Array.isArray(layer.rawPath) ? (layer.rawPath as unknown[]) : [layer.rawPath];
    for (const p of paths) {
      if (typeof p !== 'string') return null;
      if (p === '/' || p === '') {
        if (!layer.handle?.stack) return null;
        const nested = routerPrefixes(layer.handle);
        if (!nested) return null;
        nested.forEach((n) => prefixes.add(n));
      } else prefixes.add(literalStart(p));
    }
  }
  // A prefix that another one starts with adds nothing.
  const all = [...prefixes].sort();
  return all.filter((p, i) => !all.slice(0, i).some((q) => p.startsWith(q)));
}

/** The path express's router matches (`req.path`), lower-cased: express matches case-insensitively. */
const lowerPath = (req: Request) => req.path.toLowerCase();

/**
 * Module routers (declared with full paths, each would be mounted at `/`) as one middleware
 * that enters, in order, only those with a route whose literal start (the part before its
 * first parameter) begins the request's path. Mounted one by one, express would enter every
 * router and test every route's pattern of every router before the one that serves a request.
 * Compared case-insensitively like express's default; a router entered routes the request
 * exactly as before, and a router skipped could not have matched any of its layers. Each
 * router's prefixes are read once, here: add every route to the routers before.
 */
export function prefixRouters(routers: Router[]): RequestHandler {
  const entries = routers.map((router) => ({
    router,
    // A router with a layer for every path (a path-less middleware) is always entered.
    prefixes: routerPrefixes(router) ?? [''],
  }));
  const enters = (path: string, prefixes: string[]) => {
    for (let i = 0; i < prefixes.length; i++) if (path.startsWith(prefixes[i])) return true;
    return false;
  };
  const handler = (req: Request, res: Response, next: NextFunction) => {
    const path = lowerPath(req);
    let i = 0;
    // What a router calls when it did not answer: an error goes on to the error handlers,
    // else the next router that may match ('route' means no error, as between app layers).
    const step = (err?: unknown) => {
      if (err && err !== 'route') return next(err);
      while (i < entries.length) {
        const e = entries[i++];
        if (enters(path, e.prefixes)) return e.router(req, res, step);
      }
      next();
    };
    step();
  };
  // The routers' layers stay visible to whatever lists the app's routes through
  // `layer.handle.stack` (the OpenAPI completeness checks).
  return Object.assign(handler, { stack: entries.map((e) => ({ handle: e.router })) });
}

/**
 * `handler` for requests whose path is one of `paths` or lies under one (`/auth`, `/auth/…`),
 * matched like `app.use(paths, handler)` but as one prefix test per path, without express's
 * per-path patterns. Unlike a mount, `req.url` is left whole: only for handlers that do not
 * read it (cookie parsing, a per-IP limit).
 */
export function onPaths(paths: string[], handler: RequestHandler): RequestHandler {
  const lower = paths.map((p) => p.toLowerCase().replace(/\/$/, ''));
  return (req, res, next) => {
    const path = lowerPath(req);
    for (const p of lower)
      if (path.startsWith(p) && (path.length === p.length || path[p.length] === '/')) return handler(req, res, next);
    next();
  };
}

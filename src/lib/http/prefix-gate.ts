import type { Request, RequestHandler, Response, NextFunction, Router } from 'express';

interface StackLayer {
  rawPath?: unknown;
  handle?: { stack?: StackLayer[] };
}

/** The literal start of an express path pattern: everything before its first parameter, wildcard or group. */
const literalStart = (pattern: string) => {
  const at = pattern.search(/[:*{(\\]/);
  return (at < 0 ? pattern : pattern.slice(0, at)).toLowerCase();
};

/**
 * The literal path prefixes a router can match, read from its layers (nested routers mounted
 * without a path included), or null when some layer could match any path (a path-less
 * middleware, a RegExp path).
 */
export function routerPrefixes(router: { stack?: StackLayer[] }): string[] | null {
  const prefixes = new Set<string>();
  for (const layer of router.stack ?? []) {
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

const PATH = Symbol('path the lower-cased one is of');
const LOWER_PATH = Symbol('lower-cased path');
type Pathed = Request & { [PATH]?: string; [LOWER_PATH]?: string };

/**
 * Mounts a module router (declared with full paths, mounted at `/`) so that only requests
 * whose path starts with one of its routes' literal prefixes enter it. Express would otherwise
 * walk every module router's whole stack, testing each route's pattern, for every request.
 * The path is the one express's router matches (`req.path`), compared case-insensitively like
 * express's default; a request let through is routed by the router exactly as before, and one
 * skipped could not have matched any of its layers. The prefixes are read once, when this is
 * called: add every route to the router before.
 */
export function prefixGate(router: Router): RequestHandler {
  const prefixes = routerPrefixes(router as unknown as { stack?: StackLayer[] });
  if (!prefixes || prefixes.includes('/')) return router;
  const gate = (req: Request, res: Response, next: NextFunction) => {
    const r = req as Pathed;
    const path = req.path;
    let lower = r[LOWER_PATH];
    if (r[PATH] !== path || lower === undefined) {
      r[PATH] = path;
      lower = r[LOWER_PATH] = path.toLowerCase();
    }
    for (let i = 0; i < prefixes.length; i++) if (lower.startsWith(prefixes[i])) return router(req, res, next);
    next();
  };
  // The router's layers stay visible through the gate to whatever lists the app's routes
  // (the OpenAPI completeness checks walk `layer.handle.stack`).
  return Object.assign(gate, { stack: (router as unknown as { stack: unknown[] }).stack });
}

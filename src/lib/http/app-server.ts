import { createServer, IncomingMessage, ServerResponse, type Server, type ServerOptions } from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';

/**
 * The request and response classes of a server for this express app: node's own, constructed
 * with the app's `request` and `response` objects as their prototypes from the start.
 *
 * Express (and direct dispatch) give every request and response those prototypes with
 * `Object.setPrototypeOf`, which V8 answers by reshaping both objects for the rest of their
 * lives: measured on this machine, a bare node server doing only that spent ~95 µs more CPU per
 * request (~150 instead of ~55). With the prototypes already in place, both calls find nothing
 * to change and return at once.
 */
export function appServerOptions(app: Express): Pick<ServerOptions, 'IncomingMessage' | 'ServerResponse'> {
  // node's classes are ES5 constructors (callable with a `this`), so they can initialise an
  // object whose prototype is not theirs; express's prototypes inherit from theirs.
  function AppRequest(this: IncomingMessage, socket: Socket) {
    Reflect.apply(IncomingMessage, this, [socket]);
  }
  AppRequest.prototype = app.request;
  function AppResponse(this: ServerResponse, req: IncomingMessage, options?: unknown) {
    Reflect.apply(ServerResponse, this, [req, options]);
  }
  AppResponse.prototype = app.response;
  return {
    IncomingMessage: AppRequest as unknown as typeof IncomingMessage,
    ServerResponse: AppResponse as unknown as typeof ServerResponse,
  };
}

/** An HTTP server for the app, as `app.listen` would create it, with `appServerOptions`. */
export const createAppServer = (app: Express): Server => createServer(appServerOptions(app), app);

/**
 * Makes `app.listen` (server.ts, cluster workers and tests all start the app through it) create
 * its server with `createAppServer`; otherwise as express's own: a trailing callback is called
 * once, on listening or on the server's first error.
 */
export function listenWithAppServer(app: Express) {
  app.listen = function listen(...args: unknown[]) {
    const server = createAppServer(app);
    const last = args[args.length - 1];
    if (typeof last === 'function') {
      let called = false;
      const done = (...a: unknown[]) => {
        if (called) return;
        called = true;
        (last as (...a: unknown[]) => void)(...a);
      };
      args[args.length - 1] = done;
      server.once('error', done);
    }
    return server.listen(...(args as Parameters<Server['listen']>));
  } as Express['listen'];
}

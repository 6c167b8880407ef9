import assert from 'node:assert/strict';
import { IncomingMessage, ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Socket } from 'node:net';
import { describe, test } from 'node:test';
import express from 'express';
import { appServerOptions, listenWithAppServer } from '../../src/lib/http/app-server';

describe('app server: requests built with the app prototypes (pure)', () => {
  test("constructs node's request and response with the app's request and response as prototypes", () => {
    const app = express();
    const options = appServerOptions(app);
    const req = new options.IncomingMessage!(new Socket());
    const res = new options.ServerResponse!(req);
    assert.equal(Object.getPrototypeOf(req), app.request);
    assert.equal(Object.getPrototypeOf(res), app.response);
    assert.ok(req instanceof IncomingMessage && res instanceof ServerResponse);
    assert.equal(typeof req.readable, 'boolean', "initialised by node's constructor");
    assert.equal(res.statusCode, 200);
  });

  test('app.listen serves requests that arrive with those prototypes, and calls back once listening', async () => {
    const app = express();
    listenWithAppServer(app);
    app.get('/x', (req, res) => res.json({ ok: true, path: req.path }));
    let server: Server | undefined;
    await new Promise<void>((resolve) => {
      server = app.listen(0, '127.0.0.1', () => resolve());
    });
    const seen: boolean[] = [];
    // Runs before express's handler, which would give the prototypes itself.
    server!.prependListener('request', (req: IncomingMessage, res: ServerResponse) =>
      seen.push(Object.getPrototypeOf(req) === app.request && Object.getPrototypeOf(res) === app.response),
    );
    try {
      const r = await fetch(`http://127.0.0.1:${(server!.address() as AddressInfo).port}/x`);
      assert.deepEqual(await r.json(), { ok: true, path: '/x' });
      assert.deepEqual(seen, [true]);
    } finally {
      await new Promise((resolve) => server!.close(resolve));
    }
  });

  test("app.listen's callback receives a listen error once, as express's does", async () => {
    const app = express();
    listenWithAppServer(app);
    const first = await new Promise<Server>((resolve) => {
      const s: Server = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    const port = (first.address() as AddressInfo).port;
    try {
      const calls: unknown[] = [];
      await new Promise<void>((resolve) => {
        app.listen(port, '127.0.0.1', (err?: Error) => {
          calls.push(err);
          resolve();
        });
      });
      assert.equal(calls.length, 1);
      assert.equal((calls[0] as NodeJS.ErrnoException).code, 'EADDRINUSE');
    } finally {
      await new Promise((resolve) => first.close(resolve));
    }
  });
});

import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import { onPaths, prefixRouters, routerPrefixes } from '../../src/lib/http/prefix-routers';

describe('prefix routers', () => {
  const entered: string[] = [];
  const counting = (name: string, build: (r: Router) => void) => {
    const r = Router();
    build(r);
    // Records entries without adding a path-less layer to the router whose prefixes are read.
    const wrapped = Object.assign((req: Request, res: Response, next: NextFunction) => {
      entered.push(name);
      return r(req, res, next);
    }, r);
    return wrapped as unknown as Router;
  };
  const threads = counting('threads', (r) => {
    r.get('/v1/threads', (_q, s) => void s.json({ list: true }));
    r.get('/v1/threads/:id', (q, s) => void s.json({ thread: q.params.id }));
  });
  const messages = counting('messages', (r) => {
    r.get('/v1/threads/:id/messages', (q, s) => void s.json({ messages: q.params.id }));
    r.get('/v1/boom', () => {
      throw new Error('boom');
    });
  });
  const nested = Router();
  nested.use(counting('inner', (r) => r.get('/console', (_q, s) => void s.send('console'))));
  const everything = counting('everything', (r) =>
    r.use((req, res, next) => (req.path === '/anything' ? void res.send('any') : next())),
  );

  let url = '';
  let server: ReturnType<ReturnType<typeof express>['listen']>;
  before(async () => {
    const app = express();
    app.use(onPaths(['/v1/'], (_req, res, next) => (res.setHeader('X-V1', 'yes'), next())));
    app.use(prefixRouters([threads, messages, nested, everything]));
    app.use((_req, res) => void res.status(404).send('none'));
    app.use((err: Error, _req: Request, res: Response, _next: NextFunction) => void res.status(500).send(err.message));
    server = app.listen(0);
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  const get = async (path: string) => {
    entered.length = 0;
    const r = await fetch(url + path);
    return { status: r.status, text: await r.text(), v1: r.headers.get('x-v1'), entered: [...entered] };
  };

  test('reads each router literal prefixes, through nested routers, and none for a path-less layer', () => {
    assert.deepEqual(routerPrefixes(threads), ['/v1/threads']);
    assert.deepEqual(routerPrefixes(messages), ['/v1/boom', '/v1/threads/']);
    assert.deepEqual(routerPrefixes(nested), ['/console']);
    assert.equal(routerPrefixes(everything), null);
  });

  test('enters only the routers whose prefixes start the path, in order, and routes as express does', async () => {
    assert.deepEqual(await get('/v1/threads/t1/messages'), {
      status: 200,
      text: '{"messages":"t1"}',
      v1: 'yes',
      entered: ['threads', 'messages'],
    });
    assert.deepEqual((await get('/v1/threads/t1')).entered, ['threads']);
    // Case-insensitive, like express's default routing.
    assert.equal((await get('/V1/THREADS/t2')).text, '{"thread":"t2"}');
    const console = await get('/console');
    assert.deepEqual([console.text, console.v1, console.entered], ['console', null, ['inner']]);
    assert.deepEqual(await get('/anything'), { status: 200, text: 'any', v1: null, entered: ['everything'] });
  });

  test('a path no router serves falls through to the next app layer; errors reach the error handler', async () => {
    assert.deepEqual(await get('/v1/nothing'), { status: 404, text: 'none', v1: 'yes', entered: ['everything'] });
    assert.deepEqual(await get('/v1x/threads'), { status: 404, text: 'none', v1: null, entered: ['everything'] });
    assert.deepEqual(await get('/v1/boom'), { status: 500, text: 'boom', v1: 'yes', entered: ['messages'] });
  });
});

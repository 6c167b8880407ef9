import { Router } from 'express';
import type { Response } from 'express';
import { AppError } from '../../lib/errors';
import type { RouteFactory } from '../../lib/http/route';
import { ndjsonLines } from '../../lib/ndjson';
import { z } from '../../lib/zod';
import { exportQuerySchema, importResultSchema } from './export-schemas';
import type { ExportService } from './export-service';

const NDJSON = 'application/x-ndjson';

/** Resolves when the response can take more (or the client went away). */
const drained = (res: Response) =>
  new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });

/** GET /v1/admin/export and POST /v1/admin/import (admin keys, the key's own project). */
export function createExportRouter(deps: { routes: RouteFactory; service: ExportService; maxLineBytes: number }) {
  const router = Router();
  const tags = ['Export'];
  deps.routes.stream(
    router,
    {
      method: 'get',
      path: '/v1/admin/export',
      operationId: 'exportProject',
      summary: "The project's threads and events as NDJSON (streamed, resumable)",
      description:
        'Lines: one `export` header, then per thread (by id) a `thread` line followed by its retained `event` lines in seq order, then an `end` line with counts. ' +
        'A download cut short resumes with `after_thread` (the last thread line received) and `after_seq` (its last event received). See docs/RETENTION.md.',
      tags,
      auth: 'admin',
      rateClass: 'read',
      query: exportQuerySchema,
      responses: { 200: { description: 'NDJSON lines', schema: z.string(), contentType: NDJSON } },
    },
    async ({ principal, query }, _req, res) => {
      res.writeHead(200, { 'content-type': `${NDJSON}; charset=utf-8`, 'cache-control': 'no-store' });
      let gone = false;
      res.on('close', () => (gone = true));
      try {
        for await (const chunk of deps.service.exportLines(principal.projectId, {
          afterThread: query.after_thread,
          afterSeq: query.after_seq,
        })) {
          if (gone) return;
          if (!res.write(chunk)) await drained(res);
        }
        res.end();
      } catch {
        // Headers are out: end the stream without its end line, which tells the client it was cut short.
        res.destroy();
      }
    },
  );
  deps.routes.stream(
    router,
    {
      method: 'post',
      path: '/v1/admin/import',
      operationId: 'importProject',
      errors: [409, 422],
      summary: 'Import threads and events in the export format (NDJSON), idempotent by thread and seq',
      description:
        'Send the body as application/x-ndjson. Events are appended through the write pipeline in bounded batches with their original actors and timestamps. ' +
        'Running an interrupted import again skips what it already wrote; an event that differs from what the thread holds at that seq is a 409.',
      tags,
      auth: 'admin',
      rateClass: 'write',
      responses: { 200: { description: 'What was imported', schema: importResultSchema } },
    },
    async ({ principal }, req, res) => {
      if (!req.is(NDJSON) && !req.is('application/jsonl'))
        throw new AppError('unsupported_media_type', `Send the export lines as ${NDJSON}.`);
      const result = await deps.service.importLines(principal.projectId, ndjsonLines(req, deps.maxLineBytes));
      res.status(200).type('application/json').send(JSON.stringify(result));
    },
  );
  return router;
}

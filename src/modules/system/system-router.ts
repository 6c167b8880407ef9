import path from 'node:path';
import express, { Router } from 'express';
import type { Knex } from 'knex';
import { getAbsoluteFSPath } from 'swagger-ui-dist';
import { migrationsCurrent } from '../../lib/migrate';
import { buildOpenApiDocument, type OpenAPIRegistry } from '../../lib/openapi';

export interface ReadinessCheck {
  name: string;
  check(): Promise<boolean> | boolean;
  /** Reported, but a failure only makes the replica "degraded" (still 200), e.g. the KMS. */
  optional?: boolean;
}

const DOCS_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ProgressDB API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>`;

const DOCS_INIT = `window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true });`;

/** Health, readiness, and the OpenAPI document with its rendered docs (served locally, no CDN). */
export function createSystemRouter(deps: {
  db: Knex;
  registry: OpenAPIRegistry;
  checks: ReadinessCheck[];
  publicUrl?: string;
}) {
  const router = Router();
  let migrated = false;
  let document: unknown;

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    const results: Record<string, boolean> = {};
    const optional = new Set(deps.checks.filter((c) => c.optional).map((c) => c.name));
    try {
      await deps.db.raw('select 1');
      results.database = true;
      if (!migrated) migrated = await migrationsCurrent(deps.db);
      results.migrations = migrated;
    } catch {
      results.database = false;
      results.migrations = migrated;
    }
    for (const c of deps.checks) {
      try {
        results[c.name] = await c.check();
      } catch {
        results[c.name] = false;
      }
    }
    const ready = Object.entries(results).every(([name, ok]) => ok || optional.has(name));
    const degraded = ready && !Object.values(results).every(Boolean);
    res
      .status(ready ? 200 : 503)
      .json({ status: ready ? (degraded ? 'degraded' : 'ready') : 'not_ready', checks: results });
  });

  router.get('/openapi.json', (_req, res) => {
    document ??= buildOpenApiDocument(deps.registry, deps.publicUrl);
    res.json(document);
  });
  router.get('/docs', (_req, res) => {
    res.type('html').send(DOCS_HTML);
  });
  router.get('/docs/init.js', (_req, res) => {
    res.type('application/javascript').send(DOCS_INIT);
  });
  router.use('/docs/assets', express.static(path.resolve(getAbsoluteFSPath()), { maxAge: '1h', index: false }));
  return router;
}

import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';
// Loaded for its side effect: zod schemas gain .openapi() before any is registered.
import './zod';

export { OpenAPIRegistry };

export function createRegistry(): OpenAPIRegistry {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'apiKey', {
    type: 'http',
    scheme: 'bearer',
    description: 'sk_, pk_ or ak_ key',
  });
  registry.registerComponent('securitySchemes', 'apiKeyHeader', {
    type: 'apiKey',
    in: 'header',
    name: 'X-API-Key',
    description: 'The same key in X-API-Key instead of Authorization',
  });
  registry.registerComponent('securitySchemes', 'session', { type: 'apiKey', in: 'cookie', name: 'pdb_session' });
  // Response headers the service sends (draft-ietf-httpapi-ratelimit-headers syntax for RateLimit*).
  const header = (description: string, example: string) => ({
    description,
    schema: { type: 'string' as const, example },
  });
  registry.registerComponent(
    'headers',
    'X-Request-Id',
    header(
      'The request id (echoed when the request sent a usable one); problem bodies repeat it as request_id',
      'req-42',
    ),
  );
  registry.registerComponent(
    'headers',
    'RateLimit',
    header(
      'Quota left in the current window of the policy that counted this request: remaining r, reset in t seconds',
      '"write";r=12;t=7',
    ),
  );
  registry.registerComponent(
    'headers',
    'RateLimit-Policy',
    header('The policy that counted this request: q requests per w seconds', '"write";q=600;w=60'),
  );
  registry.registerComponent('headers', 'Retry-After', {
    description: 'Seconds to wait before retrying',
    schema: { type: 'integer', minimum: 1, example: 3 },
  });
  registry.registerComponent('headers', 'Idempotent-Replayed', {
    description:
      'true when this answer replays the first result of an earlier request (same Idempotency-Key or message ids)',
    schema: { type: 'string', enum: ['true'] },
  });
  return registry;
}

export function buildOpenApiDocument(registry: OpenAPIRegistry, serverUrl?: string) {
  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'ProgressDB API',
      version: '1.0.0',
      description: 'Append-only database service for chat and timeline data.',
    },
    servers: serverUrl ? [{ url: serverUrl }] : [],
  });
}

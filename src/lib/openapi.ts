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
  registry.registerComponent('securitySchemes', 'session', { type: 'apiKey', in: 'cookie', name: 'pdb_session' });
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

import { createSystemRouter } from './system-router';

/**
 * Health (/healthz), readiness (/readyz, from the checks other modules contribute), the OpenAPI
 * document and its rendered docs. Plain express routes: none of them authenticates.
 */
export function createSystemModule(deps: Parameters<typeof createSystemRouter>[0]) {
  return {
    router: () => createSystemRouter(deps),
  };
}

import type { RouteFactory } from '../../lib/http/route';
import { createAdminRouter } from './admin-router';

/** Project admin routes (ak_ keys) that belong to no other feature: GET /v1/admin/stats. */
export function createAdminModule(deps: Omit<Parameters<typeof createAdminRouter>[0], 'routes'>) {
  return {
    router: (routes: RouteFactory) => createAdminRouter({ ...deps, routes }),
  };
}

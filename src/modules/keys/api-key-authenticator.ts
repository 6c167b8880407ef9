import type { Request } from 'express';
import { forbidden } from '../../lib/errors';
import { apiKeyFrom } from '../../lib/http/credentials';
import type { ApiPrincipal } from '../../lib/http/route';
import type { KeyAuthService } from './key-auth-service';

/** Authenticators for the API-key route modes: any data-plane key, secret only, admin only. */
export function createApiKeyAuthenticators(keyAuth: KeyAuthService) {
  const principal = (req: Request) =>
    keyAuth.authenticate(
      apiKeyFrom(req.headers),
      req.get('x-user-id'),
      req.get('x-user-signature'),
      req.get('x-user-token'),
    );
  return {
    async api(req: Request): Promise<ApiPrincipal> {
      const p = await principal(req);
      if (p.kind === 'admin')
        throw forbidden('Admin keys (ak_) may call only /v1/admin routes; use a secret or publishable key.');
      return p;
    },
    async secret(req: Request): Promise<ApiPrincipal> {
      const p = await principal(req);
      if (p.kind !== 'secret') throw forbidden('This route requires a secret key (sk_).');
      return p;
    },
    async admin(req: Request): Promise<ApiPrincipal> {
      const p = await principal(req);
      if (p.kind !== 'admin') throw forbidden('This route requires an admin key (ak_).');
      return p;
    },
  };
}

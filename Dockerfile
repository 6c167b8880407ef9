# syntax=docker/dockerfile:1
# ProgressDB API image. The service runs its TypeScript through tsx (there is no separate
# compile step), so the "build" stage only resolves production dependencies.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# No dev dependencies (test tooling, Chromium driver, autocannon). Optional dependencies stay:
# esbuild's platform binary (tsx needs it) is one.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/app/.data \
    SEED_DEV_PROJECT=false
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --chown=root:root package.json tsconfig.json knexfile.ts ./
COPY --chown=root:root src ./src
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root seeds ./seeds
# The code is owned by root and read-only to the service user; only DATA_DIR is writable
# (used only when no DATABASE_URL is given).
RUN mkdir -p /app/.data && chown node:node /app/.data
USER node
EXPOSE 8080
# Liveness only; readiness (database, migrations, LISTEN) is GET /readyz, for load balancers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node is PID 1 and handles SIGTERM itself (graceful drain, see src/lib/shutdown.ts).
STOPSIGNAL SIGTERM
# A 64 MiB young-generation semi-space (V8's default is 16): each request allocates a few KiB that
# die young, and with the default V8 scavenged so often that GC took ~17 % of a cached read's CPU.
# At most 96 MiB more RSS, under load (docs/OPERATIONS.md). Same flag as `npm start`.
CMD ["node", "--max-semi-space-size=64", "--import", "tsx", "src/server.ts"]

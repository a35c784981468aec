# SoTalk server image: `docker build -t sotalk .` (README: Deployment).
# Three stages: the production dependencies alone; the build (all dependencies, TypeScript
# compiled to dist/); the runtime, which holds only the compiled dist/, migrations/, web/, the
# production node_modules and package.json (ES modules, and how the server finds its root) —
# no sources, no TypeScript, no build tools — and runs as the unprivileged `node` user.
# Debian (glibc), not Alpine: the uWebSockets.js native binary is built against glibc.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY workers ./workers
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/workers ./dist/workers
COPY migrations ./migrations
COPY web ./web
# The files stay root's and read-only to the server: it writes nothing to disk in production
# (Postgres holds the data; the master key comes from the environment).
USER node
EXPOSE 8080
# Ready = Postgres (and Redis, when configured) answer: the orchestrator's view of the instance.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# `docker run IMAGE` serves; `docker run IMAGE migrate status` (any sotalk command) runs that.
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["serve"]

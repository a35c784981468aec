// The Dockerfile's runtime stage, reproduced without Docker (the test machines have no daemon):
// its dependency stage's `npm ci` run for real in a temporary directory, its COPY instructions
// carried out from there and from the suite's build, then its ENTRYPOINT + CMD run with its ENV
// as an unprivileged user (when the tests run as root) on read-only, root-owned files, and its
// HEALTHCHECK command run against it. What it catches: a runtime dependency declared as a
// devDependency, a file the server needs that the image lacks, a write to the install directory.
import { execSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.js';
import { copyOf, dockerfileStages, envOf, steps } from '../helpers/dockerfile.js';
import { TEST_MASTER_KEY_B64, signIn } from '../helpers/server.js';
import { REPO, spawnServer } from '../helpers/spawned-server.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const IS_ROOT = process.getuid?.() === 0;
const NOBODY = 65534;

it('the runtime stage serves from its own files only, as a non-root user, and its HEALTHCHECK passes', async () => {
  const stages = dockerfileStages(readFileSync(join(REPO, 'Dockerfile'), 'utf8'));
  const runtime = stages.at(-1)!;
  const workdir = steps(runtime, 'WORKDIR').at(-1)!.args;
  const base = mkdtempSync(join(tmpdir(), 'sotalk-image-'));
  cleanups.push(() => rmSync(base, { recursive: true, force: true }));
  chmodSync(base, 0o755);

  // Stages the runtime copies from: one that installs dependencies runs its `npm ci` here for real;
  // the build stage's output is the suite's own dist/ (test/run.mjs ran `npm run build`).
  const stageRoots = new Map<string, string>();
  for (const copy of steps(runtime, 'COPY').map((c) => copyOf(c.args))) {
    if (!copy.from || stageRoots.has(copy.from)) continue;
    const stage = stages.find((s) => s.name === copy.from)!;
    const install = steps(stage, 'RUN').find((r) => /^npm ci\b/.test(r.args));
    if (install && !steps(stage, 'RUN').some((r) => /npm run build/.test(r.args))) {
      const dir = join(base, `stage-${stage.name}`);
      mkdirSync(dir);
      for (const file of ['package.json', 'package-lock.json']) cpSync(join(REPO, file), join(dir, file));
      execSync(install.args, { cwd: dir, stdio: 'ignore', env: { ...process.env, npm_config_prefer_offline: 'true' } });
      stageRoots.set(stage.name, dir);
    } else {
      stageRoots.set(stage.name, REPO);
    }
  }

  // The image's files: each COPY, relative to WORKDIR
  const app = join(base, 'app');
  mkdirSync(app, { mode: 0o755 });
  for (const copy of steps(runtime, 'COPY').map((c) => copyOf(c.args))) {
    for (const source of copy.sources) {
      const from = copy.from ? join(stageRoots.get(copy.from)!, source.replace(new RegExp(`^${workdir}/?`), '')) : join(REPO, source);
      const to = join(app, copy.dest.endsWith('/') ? join(copy.dest, basename(source)) : copy.dest);
      cpSync(from, to, { recursive: true });
    }
  }
  // no TypeScript tooling reached the image
  const modules = readdirSync(join(app, 'node_modules'));
  for (const dev of ['typescript', 'tsx', 'vitest', 'eslint', 'proper-lockfile']) expect(modules, dev).not.toContain(dev);
  expect(readdirSync(app).sort()).toEqual(['dist', 'migrations', 'node_modules', 'package.json', 'web']);
  const copied = join(base, 'copied');
  writeFileSync(copied, '');

  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  const [node, ...entry] = [...JSON.parse(steps(runtime, 'ENTRYPOINT').at(-1)!.args), ...JSON.parse(steps(runtime, 'CMD').at(-1)!.args)] as string[];
  expect(node).toBe('node');
  const server = await spawnServer(
    {
      ...envOf(runtime),
      HOST: '127.0.0.1',
      PORT: '0',
      DATABASE_URL: db.url,
      ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64,
      CRYPTO_POOL_SIZE: '1',
      CRYPTO_INLINE_MAX: '0',
      HOME: '/nonexistent',
    },
    { command: [process.execPath, ...entry], cwd: app, ...(IS_ROOT ? { uid: NOBODY, gid: NOBODY } : {}) },
  );
  cleanups.push(() => server.stop());
  expect(server.lines.join('\n')).not.toMatch(/tsx|dist\/ is/);

  // a message through the compiled crypto worker (CRYPTO_INLINE_MAX=0)
  const [a, b] = await Promise.all([signIn(server.baseUrl), signIn(server.baseUrl)]);
  const sent = await a.api.post('/api/v1/messages', { recipient_id: b.user.id, content: 'from the image' });
  expect(sent.status, JSON.stringify(sent.body)).toBe(201);

  // HEALTHCHECK's command, in exec form, with the container's PORT
  const health = steps(runtime, 'HEALTHCHECK')[0]!.args;
  const command = JSON.parse(health.slice(health.indexOf('CMD') + 3).trim()) as string[];
  expect(command[0]).toBe('node');
  const check = spawnSync(process.execPath, command.slice(1), { env: { ...process.env, PORT: String(server.port) }, encoding: 'utf8', timeout: 30_000 });
  expect(check.status, check.stderr).toBe(0);

  await server.stop();
  expect(await server.exited).toEqual({ code: 0, signal: null });
  // it wrote nothing into the install directory
  expect(spawnSync('find', [app, '-newer', copied], { encoding: 'utf8' }).stdout.trim()).toBe('');
}, 180_000);

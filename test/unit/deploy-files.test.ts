// The deployment files (README: Deployment), checked as far as a machine without a Docker daemon
// or systemd as PID 1 allows: the Dockerfile's structure, compose.yaml parsed (and validated by
// docker compose / docker-compose when installed) with each instance's environment accepted by
// the server's own configuration loader, and the systemd unit by `systemd-analyze` when present.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { copyOf, dockerfileStages, steps } from '../helpers/dockerfile.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

// ------------------------------------------------------------------------------- Dockerfile

describe('Dockerfile', () => {
  const stages = dockerfileStages(read('Dockerfile'));
  const runtime = stages.at(-1)!;

  it('is multi-stage: the build stage compiles, the runtime stage is the last and holds only the compiled output, migrations, web client and production dependencies', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.base, `stage ${s.name}: a glibc Node image (the uWebSockets.js binary)`).toMatch(/^node:20[.\d]*-(bookworm|bullseye)(-slim)?$/);
    const build = stages.find((s) => steps(s, 'RUN').some((r) => /\bnpm run build\b/.test(r.args)));
    expect(build, 'a stage runs npm run build').toBeDefined();
    expect(build).not.toBe(runtime);

    const copies = steps(runtime, 'COPY').map((c) => copyOf(c.args));
    // where each copy lands (`COPY package.json ./` → package.json)
    const destinations = copies.flatMap((c) => c.sources.map((src) => (c.dest.endsWith('/') ? c.dest + basename(src) : c.dest).replace(/^\.\//, '').replace(/\/$/, '')));
    const allowed = ['package.json', 'node_modules', 'dist/src', 'dist/workers', 'dist', 'migrations', 'web', ...(existsSync(join(ROOT, 'client')) ? ['client'] : [])];
    for (const d of destinations) expect(allowed, `runtime COPY to ${d}`).toContain(d);
    for (const needed of ['migrations', 'web', 'node_modules']) expect(destinations).toContain(needed);
    expect(destinations.some((d) => d.startsWith('dist')), 'copies the compiled output').toBe(true);
    // compiled output comes from the build stage, dependencies from a stage that installed the production ones only
    for (const c of copies.filter((c) => /dist/.test(c.dest))) expect(c.from, c.dest).toBe(build!.name);
    const modules = copies.find((c) => /node_modules/.test(c.dest))!;
    const depsStage = stages.find((s) => s.name === modules.from)!;
    expect(steps(depsStage, 'RUN').some((r) => /npm ci\b.*--omit=dev/.test(r.args)), `stage ${modules.from} installs production dependencies only`).toBe(true);
    // nothing from the sources or the TypeScript tooling
    for (const c of copies) for (const src of c.sources) expect(src, 'runtime copies no sources').not.toMatch(/^(\.\/)?(src|workers|bin|tsconfig)/);
    expect(JSON.stringify(steps(runtime, 'ENV'))).toMatch(/NODE_ENV=production/);
  });

  it('runs the compiled entry point as a non-root user, with a health check on /healthz or /readyz', () => {
    const users = steps(runtime, 'USER');
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)!.args).not.toMatch(/^(root|0)(:|$)/);
    const userAt = runtime.steps.lastIndexOf(users.at(-1)!);
    const entry = steps(runtime, 'ENTRYPOINT').at(-1)!;
    expect(runtime.steps.indexOf(entry)).toBeGreaterThan(userAt);
    const command = JSON.parse(entry.args) as string[];
    expect(command[0]).toBe('node');
    expect(command[1], 'the compiled CLI (src/cli/main.ts)').toBe('dist/src/cli/main.js');
    expect(existsSync(join(ROOT, 'src/cli/main.ts'))).toBe(true);
    expect(JSON.parse(steps(runtime, 'CMD').at(-1)!.args)).toEqual(['serve']);
    const health = steps(runtime, 'HEALTHCHECK');
    expect(health).toHaveLength(1);
    expect(health[0]!.args).toMatch(/\/(healthz|readyz)\b/);
  });

  it('.dockerignore lets in exactly what the Dockerfile copies from the context', () => {
    const ignore = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(ignore[0], 'everything is excluded first').toBe('*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    const fromContext = stages.flatMap((s) => steps(s, 'COPY').map((c) => copyOf(c.args)).filter((c) => !c.from).flatMap((c) => c.sources.map((p) => p.replace(/^\.\//, '').replace(/\/$/, ''))));
    expect([...new Set(fromContext)].sort()).toEqual([...allowed].sort());
    for (const p of allowed) expect(existsSync(join(ROOT, p)), p).toBe(true);
  });
});

// ------------------------------------------------------------------------------ compose.yaml

/** Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error} (missing → throws with the error). */
function interpolate(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\{([A-Z_][A-Z0-9_]*)(?::([-?])([^}]*))?\}/g, (_, name: string, kind?: string, rest?: string) => {
    const v = vars[name];
    if (v !== undefined && v !== '') return v;
    if (kind === '?') throw new Error(`${name}: ${rest}`);
    return kind === '-' ? (rest ?? '') : '';
  });
}

describe('compose.yaml', () => {
  const compose = parse(read('compose.yaml'), { merge: true }) as { services: Record<string, any>; volumes?: Record<string, unknown> };
  const services = compose.services;
  const instances = Object.entries(services).filter(([, s]) => s.build !== undefined && s.command === undefined);
  const VARS = { POSTGRES_PASSWORD: 'pw', ENCRYPTION_MASTER_KEY: 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=' };

  it('has Postgres and Redis with health checks, a one-shot migration and two SoTalk instances', () => {
    expect(services.postgres.image).toMatch(/^postgres:\d+/);
    expect(services.redis.image).toMatch(/^redis:\d+/);
    expect(services.postgres.healthcheck.test.join(' ')).toMatch(/pg_isready/);
    expect(services.redis.healthcheck.test.join(' ')).toMatch(/redis-cli ping/);
    expect(services.postgres.volumes.join(' ')).toMatch(/:\/var\/lib\/postgresql\/data$/);
    expect(Object.keys(compose.volumes ?? {})).toContain(services.postgres.volumes[0].split(':')[0]);
    expect(services.migrate.command).toEqual(['migrate', 'up']);
    expect(services.migrate.restart).toBe('no');
    expect(services.migrate.depends_on.postgres.condition).toBe('service_healthy');
    expect(instances.map(([name]) => name)).toHaveLength(2);
  });

  it('each instance starts after healthy Postgres and Redis and the migration, on its own host port, and shares the database, Redis and key', () => {
    const published = new Set<string>();
    const envs = instances.map(([name, s]) => {
      expect(s.depends_on, name).toEqual({
        postgres: { condition: 'service_healthy' },
        redis: { condition: 'service_healthy' },
        migrate: { condition: 'service_completed_successfully' },
      });
      expect(s.ports, name).toHaveLength(1);
      const [host, container] = String(s.ports[0]).split(':');
      expect(container, name).toBe('8080');
      published.add(host!);
      expect(s.stop_grace_period, 'longer than the server’s 15 s shutdown').toMatch(/^(1[6-9]|[2-9]\d)s$/);
      return Object.fromEntries(Object.entries(s.environment as Record<string, string>).map(([k, v]) => [k, interpolate(String(v), VARS)]));
    });
    expect(published.size).toBe(2);
    expect(envs[0]).toEqual(envs[1]);
    const migrateEnv = Object.fromEntries(Object.entries(services.migrate.environment as Record<string, string>).map(([k, v]) => [k, interpolate(String(v), VARS)]));
    expect(migrateEnv).toEqual(envs[0]);

    const env = envs[0]!;
    expect(env.NODE_ENV).toBe('production');
    const db = new URL(env.DATABASE_URL!);
    const pgEnv = services.postgres.environment;
    expect([db.hostname, db.username, decodeURIComponent(db.password), db.pathname.slice(1)]).toEqual(['postgres', pgEnv.POSTGRES_USER, 'pw', pgEnv.POSTGRES_DB]);
    expect(interpolate(pgEnv.POSTGRES_PASSWORD, VARS)).toBe('pw');
    expect(new URL(env.REDIS_URL!).hostname).toBe('redis');
    // the server's own loader accepts the environment as production (a typo'd name or a bad value fails here)
    const config = loadConfig(env);
    expect([config.production, config.databaseUrl, config.redisUrl]).toEqual([true, env.DATABASE_URL, env.REDIS_URL]);
    expect(config.masterKey.toString('base64')).toBe(VARS.ENCRYPTION_MASTER_KEY);
    // the master key and the database password come from the environment: no default
    expect(() => interpolate(String(services['sotalk-1'].environment.ENCRYPTION_MASTER_KEY), { POSTGRES_PASSWORD: 'pw' })).toThrow(/ENCRYPTION_MASTER_KEY/);
    expect(() => interpolate(String(services.postgres.environment.POSTGRES_PASSWORD), {})).toThrow(/POSTGRES_PASSWORD/);
  });

  const composeCli = ['docker-compose', 'docker compose'].find((cmd) => {
    const [bin, ...args] = cmd.split(' ');
    return spawnSync(bin!, [...args, 'version'], { stdio: 'ignore' }).status === 0;
  });
  it.skipIf(!composeCli)(`validates with ${composeCli ?? 'docker compose (not installed: skipped)'} config, and refuses to run without the master key`, () => {
    const [bin, ...args] = composeCli!.split(' ');
    const run = (vars: Record<string, string>) => spawnSync(bin!, [...args, '-f', join(ROOT, 'compose.yaml'), 'config', '-q'], { env: { PATH: process.env.PATH!, ...vars }, encoding: 'utf8' });
    const ok = run(VARS);
    expect(ok.status, ok.stderr).toBe(0);
    const missing = run({ POSTGRES_PASSWORD: 'pw' });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/ENCRYPTION_MASTER_KEY/);
  });
});

// ----------------------------------------------------------------------- deploy/sotalk.service

describe('deploy/sotalk.service', () => {
  const unit = read('deploy/sotalk.service');
  const directives = (key: string) => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!);

  it('runs the compiled server in production as an unprivileged user, restarted on failure, stopped with SIGTERM', () => {
    expect(directives('User')).toEqual(['sotalk']);
    expect(directives('ExecStart')).toEqual(['/usr/bin/node /opt/sotalk/bin/sotalk.js serve']);
    expect(directives('Environment')).toContain('NODE_ENV=production');
    expect(directives('EnvironmentFile')).toEqual(['/etc/sotalk/sotalk.env']);
    expect(directives('KillSignal')).toEqual(['SIGTERM']);
    expect(Number.parseInt(directives('TimeoutStopSec')[0]!, 10)).toBeGreaterThan(15);
    expect(directives('Restart')).toEqual(['on-failure']);
    for (const hardening of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'CapabilityBoundingSet=']) {
      expect(unit.split('\n'), hardening).toContain(hardening);
    }
  });

  const analyze = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!analyze)(`systemd-analyze verify accepts it and rates it well hardened${analyze ? '' : ' (systemd-analyze not installed: skipped)'}`, () => {
    // verify checks that ExecStart's binary exists: where node is not /usr/bin/node, the copy names this one
    const dir = mkdtempSync(join(tmpdir(), 'sotalk-unit-'));
    try {
      const file = join(dir, 'sotalk.service');
      writeFileSync(file, existsSync('/usr/bin/node') ? unit : unit.replace('/usr/bin/node', process.execPath));
      const verify = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      expect(verify.status, verify.stderr).toBe(0);
      expect(verify.stderr, 'no warnings (unknown keys, bad values)').toBe('');
      const security = execFileSync('systemd-analyze', ['security', '--offline=yes', file], { encoding: 'utf8' });
      const exposure = Number(/Overall exposure level for sotalk\.service: ([\d.]+)/.exec(security)?.[1]);
      expect(exposure, 'exposure on the 0 (locked down) … 10 (unprotected) scale').toBeLessThanOrEqual(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

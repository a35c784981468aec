// Rate limiter throughput and Redis cost: takes/s and Redis commands per take, on a throwaway
// redis-server (so every command counted is the limiter's), takes issued like the server does
// (many in flight, one client with auto-pipelining as the fan-out's publisher).
// Run: node --import tsx bench/rate-limiter.ts [--impl path/to/rate-limiter.ts] [--takes 200000]
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { startRedis } from '../test/helpers/redis-server.js';
import { num, parseArgs } from './lib/common.js';

interface Limiter {
  take(bucket: string, key: string, limit: { max: number; windowMs: number }): Promise<void>;
  close?(): Promise<void>;
}

const values = parseArgs(
  process.argv.slice(2),
  {
    impl: { default: 'src/services/rate-limiter.ts', help: 'module exporting the RateLimiter to measure (e.g. an older copy)' },
    takes: { default: '200000', help: 'takes per scenario' },
    inflight: { default: '256', help: 'takes in flight at once' },
  },
  'usage: npm run bench:rate-limiter -- [options]\n' +
    'Rate limiter throughput and Redis cost on a throwaway redis-server: takes/s and Redis commands per take,\n' +
    'per scenario, with Redis and without.\noptions:',
);
const { RateLimiter } = (await import(pathToFileURL(resolve(values.impl!)).href)) as { RateLimiter: new (redis?: Redis) => Limiter };
const total = num(values, 'takes', 1);
const inflight = num(values, 'inflight', 1);

const scenarios = [
  { name: 'spread: 10,000 users, 6,000/min each', users: 10_000, limit: { max: 6000, windowMs: 60_000 } },
  { name: 'hot: 20 users, 6,000/min each', users: 20, limit: { max: 6000, windowMs: 60_000 } },
  { name: 'hot: 20 users, 1,000,000/min (bench:load setting)', users: 20, limit: { max: 1_000_000, windowMs: 60_000 } },
];

const server = await startRedis();
const admin = new Redis(server.url);

// Commands sent by clients: the limiter sends only scripts (INCRBY/PEXPIRE run inside them are
// counted by Redis too, but are no round trips); `executed` includes those.
async function redisCounters(): Promise<{ sent: number; executed: number; cpuUs: number }> {
  const stats = await admin.info('commandstats');
  let sent = 0;
  let executed = 0;
  for (const m of stats.matchAll(/^cmdstat_([a-z|_]+):calls=(\d+)/gm)) {
    if (m[1] === 'info') continue;
    executed += Number(m[2]);
    if (/^(evalsha|eval|script)/.test(m[1]!)) sent += Number(m[2]);
  }
  const cpu = await admin.info('cpu');
  const sec = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(cpu)?.[1] ?? 0);
  return { sent, executed, cpuUs: (sec('used_cpu_sys') + sec('used_cpu_user')) * 1e6 };
}

let runs = 0;

async function run(name: string, users: number, limit: { max: number; windowMs: number }, withRedis: boolean): Promise<void> {
  const bucket = `send${runs++}`; // keys of one run only
  const client = withRedis ? new Redis(server.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, enableAutoPipelining: true }) : undefined;
  if (client) await new Promise((r) => client.once('ready', r));
  const limiter = new RateLimiter(client);
  // stay inside one one-minute window, so that `admitted` can be checked against the limit
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 10_000) await new Promise((r) => setTimeout(r, left + 50));
  const before = await redisCounters();
  let next = 0;
  let admitted = 0;
  const started = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      for (let i = next++; i < total; i = next++) {
        await limiter.take(bucket, `user-${i % users}`, limit).then(
          () => admitted++,
          () => {},
        );
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  await limiter.close?.();
  const after = await redisCounters();
  const commands = after.sent - before.sent;
  console.log(
    JSON.stringify({
      scenario: withRedis ? name : `${name}, no Redis`,
      takes: total,
      inflight,
      takesPerSec: Math.round(total / seconds),
      admitted,
      redisCommands: commands,
      redisCommandsPerTake: +(commands / total).toFixed(4),
      redisCommandsExecutedPerTake: +((after.executed - before.executed) / total).toFixed(4),
      nodeCpuUsPerTake: +((cpu.user + cpu.system) / total).toFixed(2),
      redisCpuUsPerTake: +((after.cpuUs - before.cpuUs) / total).toFixed(2),
    }),
  );
  client?.disconnect();
}

try {
  console.log(JSON.stringify({ impl: values.impl, node: process.version }));
  for (const s of scenarios) await run(s.name, s.users, s.limit, true);
  await run(scenarios[0]!.name, scenarios[0]!.users, scenarios[0]!.limit, false);
} finally {
  admin.disconnect();
  await server.stop();
}

import type { Registry } from 'prom-client';
import type { Route } from './router.js';

export interface ReadinessProbe {
  name: string;
  check(): Promise<void>;
}

const withTimeout = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timeout')), ms).unref())]);

/** Health and readiness at the root, no auth (docs/operations.md). */
/** `faulted`: the process hit an unexpected error and is stopping (not ready, whatever the probes say). */
export function opsRoutes(probes: ReadinessProbe[], registry: Registry, faulted: () => boolean = () => false): Route[] {
  return [
    {
      method: 'get',
      path: '/metrics',
      auth: false,
      handle: async () => ({ status: 200, text: { contentType: registry.contentType, payload: await registry.metrics() } }),
    },
    { method: 'get', path: '/healthz', auth: false, handle: () => ({ status: 200, body: { status: 'ok' } }) },
    {
      method: 'get',
      path: '/readyz',
      auth: false,
      async handle() {
        const checks: Record<string, 'ok' | 'unavailable'> = {};
        await Promise.all(
          probes.map(async (p) => {
            checks[p.name] = await withTimeout(p.check(), 2000).then(
              () => 'ok' as const,
              () => 'unavailable' as const,
            );
          }),
        );
        if (faulted()) checks.process = 'unavailable';
        const ready = Object.values(checks).every((v) => v === 'ok');
        return { status: ready ? 200 : 503, body: { status: ready ? 'ok' : 'unavailable', checks } };
      },
    },
  ];
}

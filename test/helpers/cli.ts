// The real `sotalk` binary as a child process, the way an operator runs it.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node bin/sotalk.js …args` with the test defaults and `env` on top; resolves when it exits. */
export function sotalk(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return runCommand(process.execPath, ['bin/sotalk.js', ...args], env);
}

/** A shell pipeline (bash, pipefail) that runs `sotalk` as `$SOTALK`. */
export function sotalkPipeline(script: string, env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return runCommand('bash', ['-o', 'pipefail', '-c', script], { ...env, SOTALK: `${process.execPath} bin/sotalk.js` });
}

/** `cmd …args` in `cwd` (default: this checkout) with the test defaults and `env` on top; resolves when it exits. */
export function runCommand(cmd: string, args: string[], env: Record<string, string | undefined>, cwd = REPO_ROOT): Promise<CliResult> {
  const child = spawn(cmd, args, {
    cwd,
    env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'warn', CRYPTO_POOL_SIZE: '1', REDIS_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

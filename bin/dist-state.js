// Whether dist/ (the compiled server) is current with the TypeScript sources, and the build.
// Used by bin/sotalk.js, and on the command line:
//   node bin/dist-state.js --build            `npm run build`: compiles src/ and workers/ to dist/
//   node bin/dist-state.js --build-if-stale   `npm start` (prestart): builds only when a source is
//                                             newer than the last build, so a start costs no compile
// A build holds a lock (dist/.build.lock): two `npm start`s at once (or a start during
// `npm run build`) never run two compilers over the same dist/; the second waits for the first
// and then finds dist/ current.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, statSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = new URL('../', import.meta.url);
export const COMPILED_MAIN = new URL('dist/src/cli/main.js', root);
/** Written after the compiler succeeded, dated when the build started. */
const STAMP = new URL('dist/.built', root);
const DIST = fileURLToPath(new URL('dist/', root));
/** How long a start waits for another process's build. */
const LOCK_WAIT_MS = 5 * 60_000;

/** Newest modification time (ms) of the TypeScript sources under `dir`; 0 without any (an image holding only dist/). */
function newestSource(dir) {
  const path = fileURLToPath(new URL(dir, root));
  if (!existsSync(path)) return 0;
  let newest = 0;
  for (const entry of readdirSync(path, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(`${entry.parentPath ?? entry.path}/${entry.name}`).mtimeMs);
  }
  return newest;
}

/** 'current', 'stale' (a source is newer than the build) or 'missing'. */
export function distState() {
  if (!existsSync(COMPILED_MAIN) || !existsSync(STAMP)) return 'missing';
  const built = statSync(STAMP).mtimeMs;
  return Math.max(newestSource('src'), newestSource('workers')) > built ? 'stale' : 'current';
}

/** The build tools are devDependencies: a production install (`npm ci --omit=dev`) has none. */
function devDependency(name) {
  try {
    return createRequire(import.meta.url).resolve(name);
  } catch {
    process.stderr.write(`sotalk: cannot build dist/: ${name} is not installed (a development install has it: npm ci)\n`);
    process.exit(1);
  }
}

/**
 * Compiles under the lock. `onlyIfStale`: first checks again under the lock, so a process that
 * waited for another one's build does not build a second time. Returns the exit code.
 */
async function build(onlyIfStale) {
  const tsc = devDependency('typescript/bin/tsc');
  const { default: lockfile } = await import(pathToFileURL(devDependency('proper-lockfile')).href);
  mkdirSync(DIST, { recursive: true });
  let release;
  const deadline = Date.now() + LOCK_WAIT_MS;
  let said = false;
  for (;;) {
    try {
      // The holder refreshes the lock every 15 s (so its event loop must keep running: the compiler
      // runs as an asynchronous child); one not refreshed for 30 s (its holder died) is taken over.
      release = await lockfile.lock(DIST, { lockfilePath: `${DIST}.build.lock`, stale: 30_000 });
      break;
    } catch (err) {
      if (err.code !== 'ELOCKED') throw err;
      if (Date.now() > deadline) {
        process.stderr.write(`sotalk: another build of dist/ did not finish within ${LOCK_WAIT_MS / 60_000} minutes (lock ${DIST}.build.lock)\n`);
        return 1;
      }
      if (!said) process.stderr.write('sotalk: waiting for another build of dist/ to finish\n');
      said = true;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    const state = distState();
    if (onlyIfStale && state === 'current') return 0;
    if (onlyIfStale) process.stderr.write(`sotalk: dist/ is ${state}: building (npm run build)\n`);
    const started = new Date();
    const compiler = spawn(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit', cwd: fileURLToPath(root) });
    const status = await new Promise((resolve) => {
      compiler.once('error', () => resolve(1));
      compiler.once('exit', (code) => resolve(code ?? 1));
    });
    if (status !== 0) return status;
    // Dated at the start: a source saved while the compiler ran is newer, so dist/ is stale again.
    closeSync(openSync(STAMP, 'a'));
    utimesSync(STAMP, started, started);
    return 0;
  } finally {
    await release();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [flag] = process.argv.slice(2);
  if (flag === '--build') process.exit(await build(false));
  if (flag === '--build-if-stale') process.exit(distState() === 'current' ? 0 : await build(true));
  process.stderr.write('usage: node bin/dist-state.js --build | --build-if-stale\n');
  process.exit(2);
}

#!/usr/bin/env node
// The `sotalk` command. It runs the compiled JavaScript in dist/ (`npm run build`; `npm start`
// builds first when needed): no TypeScript loader in production. With NODE_ENV=production a
// missing or stale dist/ is an error (one line: run `npm run build`), never the sources. In a
// development checkout whose sources are newer than dist/ (or never built) it runs the sources
// through tsx instead, when tsx is installed, and says so in one line: never stale code in silence.
import { COMPILED_MAIN, distState } from './dist-state.js';

const state = distState();
if (state === 'current') {
  await import(COMPILED_MAIN.href);
} else {
  const why = state === 'stale' ? 'stale (a source is newer than the build)' : 'missing';
  if (process.env.NODE_ENV === 'production') {
    process.stderr.write(`sotalk: dist/ is ${why} and NODE_ENV=production runs only compiled code: run \`npm run build\`\n`);
    process.exit(1);
  }
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write(`sotalk: dist/ is ${why} and tsx is not installed: run \`npm run build\`\n`);
    process.exit(1);
  }
  process.stderr.write(`sotalk: dist/ is ${state}: running the TypeScript sources through tsx (\`npm run build\` for the compiled code)\n`);
  register();
  await import('../src/cli/main.ts');
}

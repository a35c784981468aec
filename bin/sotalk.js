#!/usr/bin/env node
// The `sotalk` command. It runs the compiled JavaScript in dist/ (`npm run build`; `npm start`
// builds first when needed): no TypeScript loader in production. In a checkout whose sources
// are newer than dist/ (or never built) it runs the sources through tsx instead, when tsx is
// installed (a development install), and says so in one line: never stale code in silence.
import { COMPILED_MAIN, distState } from './dist-state.js';

const state = distState();
if (state === 'current') {
  await import(COMPILED_MAIN.href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write(`sotalk: dist/ is ${state} and tsx is not installed: run \`npm run build\`\n`);
    process.exit(1);
  }
  process.stderr.write(`sotalk: dist/ is ${state}: running the TypeScript sources through tsx (\`npm run build\` for the compiled code)\n`);
  register();
  await import('../src/cli/main.ts');
}

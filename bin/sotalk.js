#!/usr/bin/env node
// The `sotalk` command. TypeScript sources run through tsx's loader (workers load it too).
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');

// Unit tests: the CLI jobs' progress lines on stderr (src/cli/jobs.ts).
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { progressPrinter } from '../../src/cli/jobs.js';

function capture() {
  const stream = new PassThrough();
  const lines: string[] = [];
  stream.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)));
  return { stream, lines };
}

describe('progressPrinter', () => {
  it('prints the opening 0/total at once, even in the first second of the process, then at most once a second', () => {
    // A clock like performance.now() in a process that started 200 ms ago.
    let t = 200;
    const { stream, lines } = capture();
    const p = progressPrinter('rotate-master', stream, () => t);
    p.update(0, 3000);
    expect(lines).toEqual(['rotate-master: 0/3000 (0.0%), 0 msg/s']);
    t = 700;
    p.update(500, 3000);
    expect(lines).toHaveLength(1);
    t = 1200;
    p.update(1000, 3000);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe('rotate-master: 1000/3000 (33.3%), 1000 msg/s, ~2 s left');
    t = 1700;
    p.finish(3000, 3000);
    expect(lines[2]).toBe('rotate-master: 3000/3000 (100.0%), 2000 msg/s — done in 1.5 s');
  });
});

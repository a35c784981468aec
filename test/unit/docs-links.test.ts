// The repository explains itself: every relative link of README.md and docs/**/*.md resolves to
// a file of the repository (and to a heading, for an anchor into a Markdown file), and no file
// links or refers to anything outside the repository.
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import GithubSlugger from 'github-slugger';
import { Lexer, type Token, type Tokens } from 'marked';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Tracked and new (not ignored) files, as repository-relative POSIX paths. */
const FILES = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: ROOT, encoding: 'utf8' })
  .split('\0')
  .filter((f) => f !== '' && statSync(join(ROOT, f), { throwIfNoEntry: false })?.isFile());
const FILE_SET = new Set(FILES);
const DIRS = new Set(FILES.flatMap((f) => f.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))));

const MARKDOWN = FILES.filter((f) => f === 'README.md' || (f.startsWith('docs/') && f.endsWith('.md')));

/** Every link and image of a Markdown text (code blocks and code spans are not links). */
function linksOf(markdown: string): string[] {
  const hrefs: string[] = [];
  const walk = (tokens: Token[]) => {
    for (const t of tokens) {
      if (t.type === 'link' || t.type === 'image') hrefs.push((t as Tokens.Link).href);
      const children = (t as { tokens?: Token[] }).tokens;
      if (children) walk(children);
      if (t.type === 'list') walk((t as Tokens.List).items);
      if (t.type === 'table') {
        const table = t as Tokens.Table;
        for (const cell of [...table.header, ...table.rows.flat()]) walk(cell.tokens);
      }
    }
  };
  walk(new Lexer().lex(markdown));
  return hrefs;
}

/** The anchors GitHub gives a Markdown file's headings (duplicates get -1, -2, …). */
function anchorsOf(markdown: string): Set<string> {
  const slugger = new GithubSlugger();
  const text = (tokens: Token[]): string =>
    tokens.map((t) => ((t as { tokens?: Token[] }).tokens ? text((t as { tokens: Token[] }).tokens) : 'text' in t ? String(t.text) : '')).join('');
  const anchors = new Set<string>();
  for (const t of new Lexer().lex(markdown)) if (t.type === 'heading') anchors.add(slugger.slug(text((t as Tokens.Heading).tokens)));
  return anchors;
}

const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');

describe('links in README.md and docs/', () => {
  it('finds the documents it checks', () => {
    expect(MARKDOWN).toEqual(expect.arrayContaining(['README.md', 'docs/protocol.md', 'docs/design.md', 'docs/operations.md']));
  });

  for (const file of MARKDOWN) {
    it(`${file}: every relative link resolves to a file (and heading) of the repository`, () => {
      const problems: string[] = [];
      for (const href of linksOf(read(file))) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(href)) continue; // absolute: checked below for staying local
        const [pathPart = '', anchor] = href.split('#', 2) as [string, string | undefined];
        const target = pathPart === '' ? file : posix.normalize(posix.join(posix.dirname(file), decodeURIComponent(pathPart)));
        if (target.startsWith('../') || (!FILE_SET.has(target) && !DIRS.has(target.replace(/\/$/, '')))) {
          problems.push(`${href}: no file ${target} in the repository`);
          continue;
        }
        if (anchor !== undefined && target.endsWith('.md') && !anchorsOf(read(target)).has(anchor)) {
          problems.push(`${href}: no heading #${anchor} in ${target}`);
        }
      }
      expect(problems).toEqual([]);
    });
  }

  it('the anchor check can fail: a missing heading and a missing file are reported', () => {
    const markdown = '# Title\n\n## Close codes\n\nSee [x](#close-codes), [y](#nope), `[z](#in-code)`.\n';
    expect(linksOf(markdown)).toEqual(['#close-codes', '#nope']);
    expect(anchorsOf(markdown)).toEqual(new Set(['title', 'close-codes']));
    expect(anchorsOf('## WebSocket (`/ws`)\n\n#### `typing`\n\n#### `typing`\n')).toEqual(new Set(['websocket-ws', 'typing', 'typing-1']));
  });
});

// ---------------------------------------------------------------- nothing outside the repository

/** Files whose text is not the project's own words. */
const SKIP = /(^|\/)(node_modules|dist)\/|^package-lock\.json$|\.(png|jpe?g|gif|ico|webp|woff2?|ttf|pdf|gz|zip)$/;

/** URLs that stay on this machine or are placeholders for the service's own address. */
const LOCAL_URL = /^(https?|wss?):\/\/(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1?\]|host)([:/?]|$)|^(https?|wss?):\/\/\$\{/;
/** XML namespace names are identifiers, not links. */
const XML_NAMESPACE = /^http:\/\/www\.w3\.org\/2000\/svg$/;

const URL_IN_TEXT = /\b(?:https?|wss?):\/\/[^\s'"`<>)\]]*/g;
/** References to documents that are not in the repository (written so that this file does not match itself). */
const OUTSIDE_REFERENCES: [RegExp, string][] = [
  [/\.\.\/shared\b/, 'a path outside the repository'],
  [/SPEC\.md/, 'a document outside the repository'],
  [/\bSPEC\s*§/, 'a section of a document outside the repository'],
  [/\bthe\s+spec\b/i, 'a document outside the repository'],
];

function outsideReferences(text: string): string[] {
  const found: string[] = [];
  for (const url of text.match(URL_IN_TEXT) ?? []) {
    if (!LOCAL_URL.test(url) && !XML_NAMESPACE.test(url)) found.push(url);
  }
  for (const [pattern, what] of OUTSIDE_REFERENCES) {
    const match = pattern.exec(text);
    if (match) found.push(`${match[0]} (${what})`);
  }
  return found;
}

describe('no file refers to anything outside the repository', () => {
  it('checks the repository’s own files, and only those', () => {
    const checked = FILES.filter((f) => !SKIP.test(f));
    expect(checked).toEqual(expect.arrayContaining(['README.md', 'src/main.ts', 'docs/asyncapi.yaml', 'docs/openapi.json', 'web/index.html']));
    expect(checked.some((f) => f.includes('node_modules/') || f === 'package-lock.json')).toBe(false);
  });

  it('no links to external sites, no paths or documents outside the repository', () => {
    const problems: string[] = [];
    for (const file of FILES) {
      if (SKIP.test(file)) continue;
      const text = read(file);
      if (text.includes('\0')) continue; // binary
      text.split('\n').forEach((line, i) => {
        for (const found of outsideReferences(line)) problems.push(`${file}:${i + 1}: ${found}`);
      });
    }
    expect(problems).toEqual([]);
  });

  it('the check can fail: external links and outside documents are found, the service’s own URLs are not', () => {
    const [dots, site] = ['..', ['https:', '//example.com/docs'].join('')];
    expect(outsideReferences(`see ${site} and ${dots}/shared/x`)).toEqual([site, `${dots}/shared (a path outside the repository)`]);
    expect(outsideReferences(['as the ', 'spec says'].join(''))).toHaveLength(1);
    expect(outsideReferences(['SPEC', '.md'].join(''))).toHaveLength(1);
    expect(outsideReferences('open http://localhost:8080/ or ws://127.0.0.1:8081/ws or http://host:port or `http://${host}:${port}/`')).toEqual([]);
    expect(outsideReferences('<svg xmlns="http://www.w3.org/2000/svg">')).toEqual([]);
    expect(outsideReferences('const SPEC = {}; // a variable, the specification of options')).toEqual([]);
  });
});

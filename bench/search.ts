// `npm run bench:search`: search latency over a large history. Spawns a server on a fresh
// database, creates users and group conversations through the API, then loads N messages
// (default 1,000,000) straight into Postgres — really encrypted under each conversation's key and
// really indexed (blind-index tokens of their words, docs/design.md), written as the server writes them — and runs
// searches through GET /api/v1/search: common words, rare words, several words, and a user who is
// in every conversation. Reports latency percentiles, searches/s and the server's event-loop
// delay (the worst stall while searching).
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { seal } from '../src/crypto/aead.js';
import { deriveConversationKey, keyFingerprint } from '../src/crypto/kdf.js';
import { deriveSearchKey, searchToken, searchWords } from '../src/crypto/search-tokens.js';
import { createGroup, signInMany, type User } from './lib/chat.js';
import { Errors, Latency, fmt, machineInfo, mapLimit, now, num, parseArgs, round } from './lib/common.js';
import { createHttpClient, type HttpClient } from './lib/http-client.js';
import { openTarget, readMetrics } from './lib/target.js';

const USAGE = `usage: npm run bench:search -- [options]
Spawns \`node bin/sotalk.js serve\` on a fresh database (BENCH_DATABASE_URL / DATABASE_URL names the
Postgres server), loads --messages messages into --conversations group conversations, and measures
GET /api/v1/search. Loading 1,000,000 messages takes a few minutes.
options:`;

const a = parseArgs(
  process.argv.slice(2),
  {
    messages: { default: '1000000', help: 'messages to load' },
    conversations: { default: '1000', help: 'group conversations they are spread over' },
    users: { default: '200', help: 'users; each is in --per-user conversations' },
    'per-user': { default: '20', help: 'conversations per user (one more user is in all of them)' },
    words: { default: '12', help: 'words per message, drawn from a Zipf-distributed vocabulary' },
    vocabulary: { default: '20000', help: 'distinct words' },
    duration: { default: '5', help: 'measured seconds per query case' },
    connections: { default: '8', help: 'concurrent searches' },
    out: { help: 'also append the JSON result line to this file' },
  },
  USAGE,
);
const O = {
  messages: num(a, 'messages', 1),
  conversations: num(a, 'conversations', 1),
  users: num(a, 'users', 2),
  perUser: num(a, 'per-user', 1),
  words: num(a, 'words', 1, 100),
  vocabulary: num(a, 'vocabulary', 10),
  duration: num(a, 'duration', 1),
  connections: num(a, 'connections', 1, 256),
};

/** Word of rank r (0 = most common): short synthetic words, distinct, 2+ letters. */
const word = (r: number) => `w${r.toString(36)}`;

/** Zipf(1) sampler over the vocabulary (inverse CDF on precomputed cumulative weights). */
function zipf(n: number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1);
  return () => {
    const x = Math.random() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

interface Conversation {
  id: string;
  members: User[];
  createdUnixSeconds: number;
  fingerprint: string;
}

async function load(pool: pg.Pool, masterKey: Buffer, convs: Conversation[]): Promise<void> {
  const started = now();
  const fingerprint = keyFingerprint(masterKey);
  await pool.query('DROP INDEX IF EXISTS message_search_index_tokens'); // built once at the end: far faster than row by row
  const sample = zipf(O.vocabulary);
  const perConversation = Math.ceil(O.messages / convs.length);
  const base = Date.now() - O.messages * 10; // one message every 10 ms, ending now
  let loaded = 0;
  let lastReport = now();
  await mapLimit(convs.length, 3, async (ci) => {
    const c = convs[ci]!;
    const key = deriveConversationKey(masterKey, c.id, c.createdUnixSeconds, 1);
    const searchKey = deriveSearchKey(masterKey, c.id);
    const tokens = new Map<string, Buffer>();
    const tokenOf = (w: string) => {
      let t = tokens.get(w);
      if (!t) tokens.set(w, (t = searchToken(searchKey, w)));
      return t;
    };
    const count = Math.min(perConversation, O.messages - ci * perConversation);
    for (let start = 0; start < count; start += 2000) {
      const n = Math.min(2000, count - start);
      const cols = { id: [] as string[], sender: [] as string[], seq: [] as number[], at: [] as string[], content: [] as Buffer[], nonce: [] as Buffer[], tag: [] as Buffer[], tokens: [] as string[] };
      for (let i = 0; i < n; i++) {
        const seq = start + i + 1;
        const id = randomUUID();
        const sender = c.members[Math.floor(Math.random() * c.members.length)]!.id;
        const text = Array.from({ length: O.words }, () => word(sample())).join(' ');
        const nonce = randomBytes(12);
        const sealed = seal(key, nonce, Buffer.from(text), Buffer.from(`${c.id}:${id}:${sender}`));
        cols.id.push(id);
        cols.sender.push(sender);
        cols.seq.push(seq);
        cols.at.push(new Date(base + (ci + seq * convs.length) * 10).toISOString());
        cols.content.push(sealed.ciphertext);
        cols.nonce.push(nonce);
        cols.tag.push(sealed.tag);
        cols.tokens.push(`{${searchWords(text).map((w) => `"\\\\x${tokenOf(w).toString('hex')}"`).join(',')}}`);
      }
      await pool.query(
        `WITH r AS (SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::bigint[], $5::timestamptz[], $6::bytea[], $7::bytea[], $8::bytea[], $9::text[])
                    AS r(id, sender, seq, at, content, nonce, tag, tokens)),
         m AS (INSERT INTO messages (id, conversation_id, sender_id, seq, content, created_at, updated_at) SELECT id, $1, sender, seq, content, at, at FROM r),
         e AS (INSERT INTO message_encryption_metadata (message_id, nonce, tag, key_version) SELECT id, nonce, tag, 1 FROM r)
         INSERT INTO message_search_index (message_id, conversation_id, master_key_fingerprint, tokens, created_at) SELECT id, $1, $10, tokens::bytea[], at FROM r`,
        [c.id, cols.id, cols.sender, cols.seq, cols.at, cols.content, cols.nonce, cols.tag, cols.tokens, fingerprint],
      );
      loaded += n;
      if (now() - lastReport > 5000) {
        lastReport = now();
        console.log(`  … ${fmt(loaded)} / ${fmt(O.messages)} messages loaded (${fmt(loaded / ((now() - started) / 1000))}/s)`);
      }
    }
    await pool.query(
      `UPDATE conversations SET last_seq = $2, last_activity_at = now() WHERE id = $1;`,
      [c.id, count],
    );
  });
  console.log(`  loaded ${fmt(loaded)} messages in ${((now() - started) / 1000).toFixed(0)} s; building the search index…`);
  const t0 = now();
  await pool.query('SET maintenance_work_mem = \'512MB\'');
  await pool.query(
    'CREATE INDEX message_search_index_tokens ON message_search_index USING gin (tokens) WITH (gin_pending_list_limit = 16384)',
  );
  await pool.query('ANALYZE messages; ANALYZE message_search_index; ANALYZE message_encryption_metadata');
  console.log(`  index built in ${((now() - t0) / 1000).toFixed(0)} s`);
}

interface Case {
  name: string;
  user: User;
  q: () => string;
  conversations: number;
}

async function measure(http: HttpClient, baseUrl: string, c: Case) {
  const latency = new Latency();
  const errors = new Errors();
  let ok = 0;
  let results = 0;
  const lagMax = /eventloop_lag_max_seconds$/;
  const maxLag = async () => {
    const m = await readMetrics(baseUrl);
    for (const [k, v] of m) if (lagMax.test(k)) return v;
    return null;
  };
  await maxLag(); // prom-client resets the event-loop histogram on each scrape
  const end = now() + O.duration * 1000;
  const lagSamples: number[] = [];
  const sampler = setInterval(() => void maxLag().then((v) => v !== null && lagSamples.push(v)), 500);
  await Promise.all(
    Array.from({ length: O.connections }, async () => {
      while (now() < end) {
        const t0 = now();
        const r = await http.request('GET', `/api/v1/search?q=${encodeURIComponent(c.q())}&limit=20`, undefined, c.user.token);
        if (r.status === 200) {
          ok++;
          latency.record(now() - t0);
          results += (JSON.parse(r.body.toString('utf8')) as { results: unknown[] }).results.length;
        } else errors.add(String(r.status || r.error));
      }
    }),
  );
  clearInterval(sampler);
  const last = await maxLag();
  if (last !== null) lagSamples.push(last);
  return {
    case: c.name,
    conversations: c.conversations,
    searches_per_s: round(ok / O.duration, 1),
    ...latency.summary(),
    mean_results: ok ? round(results / ok, 1) : null,
    errors: errors.counts,
    event_loop_max_delay_ms: lagSamples.length ? round(Math.max(...lagSamples) * 1000, 1) : null,
    text: `  ${c.name.padEnd(44)} ${fmt(ok / O.duration).padStart(6)}/s  ${latency.text()}  results ${ok ? (results / ok).toFixed(1) : '-'}  errors ${errors.text()}  loop max ${lagSamples.length ? (Math.max(...lagSamples) * 1000).toFixed(1) : '?'} ms`,
  };
}

async function main() {
  const masterKey = randomBytes(32);
  console.log(`sotalk search bench: ${fmt(O.messages)} messages in ${fmt(O.conversations)} conversations, ${O.words} words each (vocabulary ${fmt(O.vocabulary)}, Zipf)`);
  const target = await openTarget({ logLevel: 'info', dbAsIs: false, env: { ENCRYPTION_MASTER_KEY: masterKey.toString('base64'), SEARCH_ENABLED: 'true' } });
  const http = await createHttpClient(target.baseUrl, 'auto', Math.max(O.connections, 32), 30_000);
  const pool = new pg.Pool({ connectionString: target.pgUrl, max: 4 });
  try {
    const users = await signInMany(http, O.users + 1);
    const heavy = users.pop()!;
    const memberships: User[][] = Array.from({ length: O.conversations }, () => [heavy]);
    for (const u of users) {
      for (let i = 0; i < O.perUser; i++) memberships[Math.floor(Math.random() * O.conversations)]!.push(u);
    }
    const ids = await mapLimit(O.conversations, 16, (i) => createGroup(http, heavy, [...new Set(memberships[i]!.slice(1))]));
    const { rows } = await pool.query<{ conversation_id: string; created_unix_seconds: number; master_key_fingerprint: string }>(
      'SELECT conversation_id, created_unix_seconds, master_key_fingerprint FROM conversation_keys WHERE version = 1',
    );
    const keyOf = new Map(rows.map((r) => [r.conversation_id, r]));
    const convs: Conversation[] = ids.map((id, i) => ({ id, members: memberships[i]!, createdUnixSeconds: Number(keyOf.get(id)!.created_unix_seconds), fingerprint: keyOf.get(id)!.master_key_fingerprint }));
    console.log(`  ${users.length + 1} users, ${convs.length} conversations (a typical user is in ~${O.perUser}; one user is in all)`);
    await load(pool, masterKey, convs);
    const typical = users[0]!;
    const typicalConvs = memberships.filter((m) => m.includes(typical)).length;
    const pick = (ranks: number[]) => () => ranks.map((r) => word(r)).join(' ');
    const rare = () => word(1000 + Math.floor(Math.random() * (O.vocabulary - 1000)));
    const cases: Case[] = [
      { name: 'common word (rank 1), typical user', user: typical, q: pick([0]), conversations: typicalConvs },
      { name: 'mid word (rank 100), typical user', user: typical, q: pick([100]), conversations: typicalConvs },
      { name: 'rare word (rank 1000+), typical user', user: typical, q: rare, conversations: typicalConvs },
      { name: 'two words (ranks 3 and 50), typical user', user: typical, q: pick([3, 50]), conversations: typicalConvs },
      { name: 'common word, user in every conversation', user: heavy, q: pick([0]), conversations: O.conversations },
      { name: 'rare word, user in every conversation', user: heavy, q: rare, conversations: O.conversations },
      { name: 'three words, user in every conversation', user: heavy, q: pick([1, 20, 300]), conversations: O.conversations },
    ];
    console.log(`  searching: ${O.connections} concurrent, ${O.duration} s per case (limit=20)`);
    const results = [];
    for (const c of cases) {
      const r = await measure(http, target.baseUrl, c);
      console.log(r.text);
      const { text: _t, ...json } = r;
      results.push(json);
    }
    const worstP99 = Math.max(...results.map((r) => (r as unknown as { p99_ms: number | null }).p99_ms ?? Infinity));
    const worstLag = Math.max(...results.map((r) => r.event_loop_max_delay_ms ?? Infinity));
    console.log('  targets (issue "Send and fan-out pipeline"):');
    console.log(`    [${worstP99 <= 50 ? 'met' : 'MISS'}] search p99 ≤ 50 ms over ${fmt(O.messages)} messages (worst case ${worstP99} ms)`);
    console.log(`    [${worstLag <= 50 ? 'met' : 'MISS'}] no event-loop stall over 50 ms while searching (worst ${worstLag} ms)`);
    const line = JSON.stringify({ bench: 'search', ...O, cases: results, machine: machineInfo(), at: new Date().toISOString() });
    console.log(line);
    if (a.out) (await import('node:fs')).appendFileSync(a.out, line + '\n');
  } finally {
    await pool.end();
    await http.close();
    await target.close();
  }
}

await main();

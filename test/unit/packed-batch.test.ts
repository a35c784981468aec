import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MessageCipher } from '../../src/cipher/message-cipher.js';
import type { KeyRef } from '../../src/keys/conversation-keys.js';
import { MasterKeyring } from '../../src/keys/keyring.js';

const keyring = new MasterKeyring(randomBytes(32), [randomBytes(32)]);
const ref = (conversationId: string, version = 1): KeyRef => ({ conversationId, version, createdUnixSeconds: 1700000000, fingerprint: keyring.active.fingerprint });

describe('MessageCipher through the worker pool (packed, transferred batches)', () => {
  it('round-trips mixed sizes and keys, and reports tampered, misbound and keyless jobs as null', async () => {
    const pooled = new MessageCipher({ keyring, poolSize: 1, inlineMax: 0 });
    const inline = new MessageCipher({ keyring, poolSize: 0, inlineMax: 0 });
    try {
      const plaintexts = [Buffer.alloc(0), Buffer.from('héllo wörld ✓'), randomBytes(70_000), randomBytes(1), randomBytes(300)];
      const jobs = plaintexts.map((p, i) => ({ key: ref(`c${i % 2}`, 1 + (i % 3)), aad: `c:m${i}:s`, plaintext: p }));
      const sealed = await pooled.seal(jobs);
      expect(sealed.map((s) => s.ciphertext.length)).toEqual(plaintexts.map((p) => p.length));
      expect(new Set(sealed.map((s) => s.nonce.toString('hex'))).size).toBe(jobs.length);
      const openJobs = jobs.map((j, i) => ({ key: j.key, aad: j.aad, ...sealed[i]! }));
      // the pool's output decrypts inline too, and the other way round
      for (const cipher of [pooled, inline]) {
        const opened = await cipher.open(openJobs);
        opened.forEach((o, i) => expect(o?.equals(plaintexts[i]!)).toBe(true));
      }
      const tampered = Buffer.from(sealed[1]!.ciphertext);
      tampered[0]! ^= 1;
      const bad = await pooled.open([
        { ...openJobs[1]!, ciphertext: tampered },
        { ...openJobs[2]!, aad: 'c:other:s' },
        { ...openJobs[3]!, key: { ...openJobs[3]!.key, fingerprint: 'ffffffffffffffff' } },
        { ...openJobs[4]!, nonce: Buffer.alloc(3) },
        openJobs[4]!,
      ]);
      expect(bad.slice(0, 4)).toEqual([null, null, null, null]);
      expect(bad[4]?.equals(plaintexts[4]!)).toBe(true);
    } finally {
      await pooled.close();
      await inline.close();
    }
  });
});

describe('a crypto worker that dies mid-task', () => {
  it('is replaced, and the batch is retried instead of hanging', async () => {
    const errors: unknown[] = [];
    const cipher = new MessageCipher({ keyring, poolSize: 1, inlineMax: 0, onWorkerError: (e) => errors.push(e) });
    try {
      const jobs = Array.from({ length: 20_000 }, (_, i) => ({ key: ref('c'), aad: `c:m${i}:s`, plaintext: randomBytes(256) }));
      await cipher.seal(jobs.slice(0, 1)); // the worker is up
      const pending = cipher.seal(jobs);
      await new Promise((r) => setTimeout(r, 5));
      await cipher.killWorkerForTests();
      const sealed = await pending;
      expect(sealed).toHaveLength(jobs.length);
      expect(errors.length).toBeGreaterThanOrEqual(1);
      const opened = await cipher.open(jobs.slice(0, 3).map((j, i) => ({ key: j.key, aad: j.aad, ...sealed[i]! })));
      opened.forEach((o, i) => expect(o?.equals(jobs[i]!.plaintext)).toBe(true));
    } finally {
      await cipher.close();
    }
  });
});

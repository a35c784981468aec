import { notFound } from '../errors.js';
import type { Queryable } from '../db/transaction.js';
import type { Route } from './router.js';
import { uuidParam } from './validation.js';

/** How many leading ciphertext bytes the panel shows; a preview, never the whole message. */
const PREVIEW_BYTES = 32;

interface AtRestRow {
  id: string;
  conversation_id: string;
  deleted: boolean;
  key_version: number | null;
  master_key_fingerprint: string | null;
  algorithm: string | null;
  nonce: Buffer | null;
  tag: Buffer | null;
  ciphertext_bytes: number | null;
  ciphertext_head: Buffer | null;
}

/**
 * What the database holds for one message, if `userId` is a member of its conversation. Reads
 * only the first bytes of the ciphertext; no key and no plaintext is ever involved.
 */
async function selectAtRest(db: Queryable, messageId: string, userId: string): Promise<AtRestRow | undefined> {
  const { rows } = await db.query<AtRestRow>(
    `SELECT m.id, m.conversation_id, m.deleted_at IS NOT NULL AS deleted,
            e.key_version, k.master_key_fingerprint, e.algorithm, e.nonce, e.tag,
            octet_length(m.content) AS ciphertext_bytes, substring(m.content FROM 1 FOR ${PREVIEW_BYTES}) AS ciphertext_head
     FROM messages m
     JOIN conversation_members cm ON cm.conversation_id = m.conversation_id AND cm.user_id = $2
     LEFT JOIN message_encryption_metadata e ON e.message_id = m.id
     LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version
     WHERE m.id = $1`,
    [messageId, userId],
  );
  return rows[0];
}

const hex = (b: Buffer | null) => (b ? b.toString('hex') : null);

/**
 * `GET /api/v1/messages/{id}/at-rest`: the stored form of a message for the web client's
 * "at rest" panel (key version, nonce, tag, a hex preview of the ciphertext). A demonstration
 * aid: the composition root registers it only when SOTALK_AT_REST_PANEL is on, never in production.
 */
export function atRestRoutes(pool: Queryable): Route[] {
  return [
    {
      method: 'get',
      path: '/api/v1/messages/:id/at-rest',
      auth: true,
      async handle(ctx) {
        const row = await selectAtRest(pool, uuidParam(ctx.params, 'id'), ctx.user.id);
        if (!row) throw notFound('message');
        return {
          status: 200,
          body: {
            message_id: row.id,
            conversation_id: row.conversation_id,
            deleted: row.deleted,
            key_version: row.key_version,
            master_key_fingerprint: row.master_key_fingerprint,
            algorithm: row.algorithm,
            nonce: hex(row.nonce),
            tag: hex(row.tag),
            ciphertext_bytes: row.ciphertext_bytes ?? 0,
            ciphertext_preview: hex(row.ciphertext_head),
          },
        };
      },
    },
  ];
}

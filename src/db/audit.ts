import type { Queryable } from './transaction.js';

export type AuditPurpose = 'fetch' | 'search' | 'export' | 'reencrypt' | 'verify' | 'reindex';

export interface AuditEntry {
  actorId: string | null;
  conversationId: string;
  messageCount: number;
  purpose: AuditPurpose;
  requestId: string | null;
  occurredAt: Date;
}

/** Writes many audit rows in one statement. */
export async function insertAuditRows(db: Queryable, entries: AuditEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await db.query(
    `INSERT INTO decryption_audit (occurred_at, actor_id, conversation_id, message_count, purpose, request_id)
     SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[])`,
    [
      entries.map((e) => e.occurredAt),
      entries.map((e) => e.actorId),
      entries.map((e) => e.conversationId),
      entries.map((e) => e.messageCount),
      entries.map((e) => e.purpose),
      entries.map((e) => e.requestId),
    ],
  );
}

-- Running server instances and the master keys they hold (fingerprints only), refreshed every
-- few seconds: `sotalk rotate-master` refuses to run while a live instance lacks the key it
-- re-encrypts to, and `sotalk migrate down` asks for --yes while instances use the database.
CREATE TABLE instances (
  id uuid PRIMARY KEY,
  host text NOT NULL,
  pid integer NOT NULL,
  started_at timestamptz NOT NULL,
  last_seen timestamptz NOT NULL,
  active_fingerprint text NOT NULL,
  key_fingerprints text[] NOT NULL
);
CREATE INDEX instances_last_seen ON instances (last_seen);

import pino from 'pino';

export type Logger = pino.Logger;

/**
 * Structured JSON logs. Redaction is a second line of defence: plaintext, keys and tokens are
 * never passed to the logger in the first place (ids and counts only).
 */
export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'sotalk' },
      redact: {
        paths: ['content', '*.content', 'token', '*.token', 'authorization', '*.authorization', 'key', '*.key', 'signature', '*.signature'],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

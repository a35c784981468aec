import pino from 'pino';
import pretty from 'pino-pretty';

export type Logger = pino.Logger;

export type LogFormat = 'json' | 'pretty';

/**
 * Structured logs: JSON lines (production, and whenever stdout is not a terminal — a supervisor
 * or a log shipper reads them), or human-readable lines (`pretty`: development at a terminal).
 * Redaction is a second line of defence: plaintext, keys and tokens are never passed to the
 * logger in the first place (ids and counts only).
 */
export function createLogger(level = 'info', destination?: pino.DestinationStream | { format: LogFormat }): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'sotalk' },
    redact: {
      paths: ['content', '*.content', 'token', '*.token', 'authorization', '*.authorization', 'key', '*.key', 'signature', '*.signature'],
      censor: '[redacted]',
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination && 'format' in destination) {
    if (destination.format === 'json') return pino(options);
    return pino(options, pretty({ sync: true, colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'service,hostname,pid', messageFormat: '{msg}{if url} — open {url}{end}' }));
  }
  return pino(options, destination);
}

/** LOG_FORMAT when set; else JSON in production or when stdout is not a terminal, pretty otherwise. */
export function logFormat(configured: LogFormat | undefined, production: boolean): LogFormat {
  return configured ?? (production || !process.stdout.isTTY ? 'json' : 'pretty');
}

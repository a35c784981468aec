// What the command line can get wrong, kept apart from the jobs so that `--help` and usage
// errors answer without loading the server or the database driver.
import { UUID_PATTERN } from '../http/validation.js';

/** An expected failure of a command (unknown conversation, refused precondition): one line, exit 1. */
export class CommandError extends Error {}

/** A malformed argument the flag parser cannot see (a UUID that is not one): exit 2 with the usage. */
export class UsageError extends Error {}

export function uuidArgument(value: string | undefined, what: string): string {
  if (!value || !UUID_PATTERN.test(value)) throw new UsageError(`${what} must be a UUID`);
  return value.toLowerCase();
}

export function checkMigrateAction(action: string | undefined): void {
  if (!['up', 'down', 'status'].includes(action ?? '')) throw new UsageError(`unknown action "${action}" (up, down or status)`);
}

// What the examples share: clients of the library (client/) with a timeout, one-line failures.
import { generateWallet, SoTalkClient, SoTalkError } from '../../client/index.js';

/** How long any step may take (ms); EXAMPLE_TIMEOUT_MS overrides. */
export const TIMEOUT_MS = Number(process.env.EXAMPLE_TIMEOUT_MS) || 10_000;

/** Prints one line on stderr and exits 1. */
export function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

// a failed call (a rejected top-level await) ends the example with its reason in one line
process.on('uncaughtException', (err) => {
  if (!(err instanceof SoTalkError)) {
    process.stderr.write(`${err.stack ?? err}\n`);
    process.exit(1);
  }
  fail(err.code === 'network' ? `${err.message}: is the server running there?` : `${err.message} (${err.code}${err.field ? `, field ${err.field}` : ''})`);
});

/** A fresh wallet, signed in. */
export async function signIn(baseUrl: string): Promise<SoTalkClient> {
  const client = new SoTalkClient({ baseUrl, wallet: await generateWallet(), timeoutMs: TIMEOUT_MS, retries: 2 });
  await client.signIn();
  return client;
}

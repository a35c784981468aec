// Rate limits count in fixed one-minute windows (wall clock). A test that counts up to a limit
// must not straddle a boundary, where the count starts again: it waits for the next window when
// fewer than `marginMs` of this one are left.
export async function awayFromWindowEdge(marginMs = 8_000): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < marginMs) await new Promise((r) => setTimeout(r, left + 100));
}

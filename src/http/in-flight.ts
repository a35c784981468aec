/**
 * Counts requests and socket frames being handled, so shutdown can stop taking new work and
 * wait for what was accepted (and will be acknowledged) to finish.
 */
export class InFlight {
  #count = 0;
  #draining = false;
  #waiters: (() => void)[] = [];

  get draining(): boolean {
    return this.#draining;
  }

  get count(): number {
    return this.#count;
  }

  start(): void {
    this.#count++;
  }

  end(): void {
    this.#count--;
    if (this.#count === 0) for (const done of this.#waiters.splice(0)) done();
  }

  /** Refuses new work from now on; resolves when the work in hand is done or `timeoutMs` passed. */
  drain(timeoutMs: number): Promise<boolean> {
    this.#draining = true;
    if (this.#count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

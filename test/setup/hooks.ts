import type { Test } from 'uvu';

/**
 * Registers `setup` as the suite's `before` hook so that its failure fails every test of the suite.
 * uvu 0.5.6 swallows an error thrown by a `before` hook (its runner returns from `finally`): the
 * suite then reports (0 / N) with no message, and the run still exits 0.
 */
export function setUp<T>(s: Test<T>, setup: (ctx: T) => Promise<void>): void {
  let failure: unknown;
  s.before(async (ctx) => {
    try {
      await setup(ctx);
    } catch (e) {
      failure = e;
    }
  });
  s.before.each(() => {
    if (failure) throw failure;
  });
}

import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';

/** Polls `probe` until it says yes, or fails with `timeoutMessage()` after `timeoutMs`; a probe that throws ends the wait. */
export async function waitFor(
  ctx: Pick<Ctx, 'log' | 'clock'>,
  label: string,
  timeoutMs: number,
  probe: () => Promise<boolean>,
  timeoutMessage: () => string,
  intervalMs = 50,
): Promise<number> {
  const start = ctx.clock().getTime();
  const spin = ctx.log.spinner(label);
  try {
    for (;;) {
      if (await probe()) return ctx.clock().getTime() - start;
      const elapsed = ctx.clock().getTime() - start;
      if (elapsed > timeoutMs) throw new UserError(timeoutMessage(), 'see the server log: pnpm db:logs');
      spin.update(0, 0, `${(elapsed / 1000).toFixed(1)}s`);
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  } finally {
    spin.end();
  }
}

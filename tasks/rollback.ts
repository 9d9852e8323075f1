import { selectRuntime } from '@dbkit/core/runtime/select';
import { describe } from '@dbkit/core/migrations/runner';
import { positiveInt } from '@dbkit/core/migrations/command';
import { guardProduction, type GuardOptions } from '@dbkit/core/guard';
import { forceProductionFlag, guardOptions, type Task } from './task.ts';

export const task: Task<{ n: number; guard: GuardOptions }> = {
  name: 'db:rollback',
  summary: 'Roll back the last N migrations (default 1); their down files may drop tables and data.',
  usage: '[N]',
  destructive: true,
  flags: { ...forceProductionFlag, json: { type: 'boolean', description: 'print the result as JSON' } },
  options: ({ positionals, flags }) => ({
    n: positionals[0] === undefined ? 1 : positiveInt(positionals[0], 'N'),
    guard: guardOptions(flags),
  }),
  async run(ctx, { n, guard }) {
    const rt = await selectRuntime(ctx);
    await guardProduction(
      ctx,
      rt,
      'db:rollback',
      guard,
      `down ${n}`,
      `Roll back the last ${n === 1 ? 'migration' : `${n} migrations`}? Their down files run and may drop tables with their data.`,
    );
    const r = await rt.migrate({ kind: 'down', n });
    if (r) ctx.log.result(describe(r), r);
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { describe } from '@dbkit/core/migrations/runner';
import { positiveInt } from '@dbkit/core/migrations/command';
import { forceProductionFlag, guardProduction } from '@dbkit/core/guard';
import { yesFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:rollback',
  summary: 'Roll back the last N migrations (default 1); their down files may drop tables and data.',
  usage: '[N]',
  destructive: true,
  flags: { ...yesFlag, ...forceProductionFlag, json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx, { positionals, flags }) {
    const n = positionals[0] === undefined ? 1 : positiveInt(positionals[0], 'N');
    const rt = await selectRuntime(ctx);
    await guardProduction(ctx, rt, 'db:rollback', flags, `down ${n}`,
      `Roll back the last ${n === 1 ? 'migration' : `${n} migrations`}? Their down files run and may drop tables with their data.`);
    const r = await rt.migrate({ kind: 'down', n });
    if (r) ctx.log.result(describe(r), r);
  },
};

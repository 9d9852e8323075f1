import { selectRuntime } from '@dbkit/core/runtime/select';
import { afterFresh, beforeDestroy, forceProductionFlag, noBackupFlag } from '@dbkit/core/guard';
import { preflight } from '@dbkit/core/preflight';
import { describe } from '@dbkit/core/migrations/runner';
import { yesFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:fresh',
  summary: 'Recreate the database from nothing (deletes all data), then apply the migrations.',
  destructive: true,
  flags: { ...yesFlag, ...noBackupFlag, ...forceProductionFlag, seed: { type: 'boolean', description: 'run the seeds afterwards' } },
  async run(ctx, { flags }) {
    await preflight(ctx); // a fresh start that cannot start must not delete first
    const rt = await selectRuntime(ctx);
    const audit = await beforeDestroy(ctx, rt, 'db:fresh', `Delete ${rt.describeData()} and start from nothing?`, flags);
    await rt.destroy();
    await rt.up();
    const r = await rt.migrate({ kind: 'up' });
    await afterFresh(ctx, rt, { seed: Boolean(flags.seed), audit });
    ctx.log.result(`fresh database ready${r ? `; ${describe(r)}` : ''}`);
  },
};

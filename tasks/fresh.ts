import { selectRuntime } from '@dbkit/core/runtime/select';
import { beforeDestroy } from '@dbkit/core/destroy';
import { afterForcedReplace } from '@dbkit/core/guard';
import { seed } from '@dbkit/core/seeds';
import { preflight } from '@dbkit/core/preflight';
import { describe } from '@dbkit/core/migrations/runner';
import { forceProductionFlag, guardOptions, noBackupFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:fresh',
  summary: 'Recreate the database from nothing (deletes all data), then apply the migrations.',
  destructive: true,
  flags: { ...noBackupFlag, ...forceProductionFlag, seed: { type: 'boolean', description: 'run the seeds afterwards' } },
  async run(ctx, { flags }) {
    await preflight(ctx); // a fresh start that cannot start must not delete first
    const rt = await selectRuntime(ctx);
    const audit = await beforeDestroy(ctx, rt, 'db:fresh', `Delete ${rt.describeData()} and start from nothing?`, guardOptions(flags));
    await rt.destroy();
    await rt.up();
    const r = await rt.migrate({ kind: 'up' });
    await afterForcedReplace(ctx, rt, audit);
    if (flags.seed) {
      const { applied } = await seed(ctx, rt, { reseed: false });
      ctx.log.info(applied.length ? `seeded: ${applied.join(', ')}` : 'no seed files to run');
    }
    ctx.log.result(`fresh database ready${r ? `; ${describe(r)}` : ''}`);
  },
};

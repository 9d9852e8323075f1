import { selectRuntime } from '@dbkit/core/runtime/select';
import { beforeDestroy, deletionPlan } from '@dbkit/core/destroy';
import { forceProductionFlag, guardOptions, noBackupFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:delete',
  summary: 'Stop PostgreSQL and DELETE all of its data.',
  destructive: { unlessFlag: 'dry-run' },
  flags: {
    ...noBackupFlag,
    ...forceProductionFlag,
    'dry-run': { type: 'boolean', description: 'say what would be deleted, delete nothing' },
  },
  async run(ctx, { flags }) {
    const rt = await selectRuntime(ctx);
    if (flags['dry-run']) {
      ctx.log.result(`would delete ${rt.describeData()}:\n${(await deletionPlan(ctx, rt)).join('\n')}`);
      return;
    }
    await beforeDestroy(ctx, rt, 'db:delete', `Delete ${rt.describeData()}? This cannot be undone.`, guardOptions(flags));
    await rt.destroy();
    ctx.log.result(`deleted ${rt.describeData()}`);
  },
};

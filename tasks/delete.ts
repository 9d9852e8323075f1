import { selectRuntime } from '@dbkit/core/runtime/select';
import { confirmDestructive } from '@dbkit/core/confirm';
import { yesFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:delete',
  summary: 'Stop PostgreSQL and DELETE all of its data.',
  destructive: true,
  flags: { ...yesFlag, 'dry-run': { type: 'boolean', description: 'say what would be deleted, delete nothing' } },
  async run(ctx, { flags }) {
    const rt = await selectRuntime(ctx);
    if (flags['dry-run']) {
      ctx.log.result(`would delete ${rt.describeData()}`);
      return;
    }
    await confirmDestructive(ctx, 'db:delete', `Delete ${rt.describeData()}? This cannot be undone.`, Boolean(flags.yes));
    await rt.destroy();
    ctx.log.result(`deleted ${rt.describeData()}`);
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { confirmDestructive } from '@dbkit/core/confirm';
import { preflight } from '@dbkit/core/preflight';
import { describe, runMigrations } from '@dbkit/core/migrations/apply';
import { yesFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:fresh',
  summary: 'Recreate the database from nothing (deletes all data), then apply the migrations.',
  destructive: true,
  flags: { ...yesFlag },
  async run(ctx, { flags }) {
    await preflight(ctx); // a fresh start that cannot start must not delete first
    const rt = await selectRuntime(ctx);
    await confirmDestructive(ctx, 'db:fresh', `Delete ${rt.describeData()} and start from nothing?`, Boolean(flags.yes));
    await rt.destroy();
    await rt.up();
    const r = await runMigrations(ctx, rt, { kind: 'up' });
    ctx.log.result(`fresh database ready${r ? `; ${describe(r)}` : ''}`);
  },
};

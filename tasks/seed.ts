import { selectRuntime } from '@dbkit/core/runtime/select';
import { seed } from '@dbkit/core/seeds';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:seed',
  summary: 'Apply database/seeds/*.sql in order, each once (--reseed runs them all again).',
  flags: { reseed: { type: 'boolean', description: 'run every seed again, even those already applied' } },
  async run(ctx, { flags }) {
    const r = await seed(ctx, await selectRuntime(ctx), { reseed: Boolean(flags.reseed) });
    ctx.log.result(r.applied.length ? `applied ${r.applied.length} seed(s): ${r.applied.join(', ')}` : 'no change', r);
  },
};

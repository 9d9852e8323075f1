import { selectRuntime } from '@dbkit/core/runtime/select';
import { describe, runMigrations } from '@dbkit/core/migrations/apply';
import { positiveInt } from '@dbkit/core/migrations/command';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:rollback',
  summary: 'Roll back the last N migrations (default 1).',
  usage: '[N]',
  flags: { json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx, { positionals, flags: _ }) {
    const n = positionals[0] === undefined ? 1 : positiveInt(positionals[0], 'N');
    const rt = await selectRuntime(ctx);
    const r = await runMigrations(ctx, rt, { kind: 'down', n });
    if (r) ctx.log.result(describe(r), r);
  },
};

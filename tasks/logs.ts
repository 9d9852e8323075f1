import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:logs',
  summary: 'Show the server log; --follow keeps following it.',
  flags: { follow: { type: 'boolean', short: 'f', description: 'keep following new lines' } },
  async run(ctx, { flags }) {
    await (await selectRuntime(ctx)).logs(Boolean(flags.follow));
  },
};

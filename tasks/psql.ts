import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:psql',
  summary: 'psql as the application user over verified TLS; arguments pass through to psql.',
  usage: '[psql args...]',
  async run(ctx, { positionals }) {
    await (await selectRuntime(ctx)).psql(positionals);
  },
};

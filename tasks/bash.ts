import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:bash',
  summary: 'A shell in the database container (docker) or with PG* variables set for the server (native).',
  async run(ctx) {
    await (await selectRuntime(ctx)).shell();
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:down',
  summary: 'Stop PostgreSQL (data is kept).',
  async run(ctx) {
    const rt = await selectRuntime(ctx);
    const r = await rt.down();
    ctx.log.result(r.wasRunning ? 'PostgreSQL stopped' : 'PostgreSQL was not running');
  },
};

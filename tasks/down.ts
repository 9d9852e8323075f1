import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:down',
  summary: 'Stop PostgreSQL, and the standby if one runs (data is kept).',
  async run(ctx) {
    const rt = await selectRuntime(ctx);
    const r = await rt.down();
    ctx.log.result(r.wasRunning ? `PostgreSQL stopped${r.standby ? ' (the standby too)' : ''}` : 'PostgreSQL was not running');
  },
};

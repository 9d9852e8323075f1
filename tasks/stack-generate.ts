import path from 'node:path';
import { generateStack } from '@dbkit/core/runtime/swarm-stack-file';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'stack:generate',
  summary:
    'Write infra/docker-stack.yml and docker-stack.replica.yml (DB_TARGET=swarm) from infra/docker-compose.yml; --check only compares.',
  flags: {
    check: { type: 'boolean', description: 'change nothing; fail when the stack file is not what the compose file gives' },
  },
  async run(ctx, { flags }) {
    const r = await generateStack(ctx, Boolean(flags.check));
    const shown = r.files.map((f) => path.relative(ctx.cfg.root, f)).join(', ');
    ctx.log.result(r.changed ? `wrote ${shown}` : `${shown} are up to date`);
  },
};

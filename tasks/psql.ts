import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:psql',
  summary: 'psql as the application user over verified TLS; arguments, stdin and the exit status pass through.',
  usage: '[psql args...]',
  passThrough: true,
  async run(ctx, { positionals }) {
    return (await selectRuntime(ctx)).psql(positionals, { stdinIsTty: Boolean(process.stdin.isTTY) });
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:bash',
  summary:
    'A shell in the database container (docker) or with PG* set for the server (native); arguments, stdin and the exit status pass through.',
  usage: '[shell args...]',
  passThrough: true,
  async run(ctx, { positionals }) {
    return (await selectRuntime(ctx)).shell(positionals, { stdinIsTty: Boolean(process.stdin.isTTY) });
  },
};

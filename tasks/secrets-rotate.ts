import { selectRuntime } from '@dbkit/core/runtime/select';
import { rotate, ROTATABLE, type Rotatable } from '@dbkit/core/rotate';
import { UsageError } from '@dbkit/core/errors';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:secrets:rotate',
  summary: "Change a role's password in the database and its secret file together (default: app).",
  usage: '[app | migrate | postgres]',
  flags: {
    all: { type: 'boolean', description: 'rotate every role' },
    'from-file': { type: 'boolean', description: 'set the database password to what the file already holds (fixes drift)' },
  },
  async run(ctx, { positionals, flags }) {
    const which = flags.all ? [...ROTATABLE] : [(positionals[0] ?? 'app') as Rotatable];
    if (flags.all && positionals.length) throw new UsageError('give a role or --all, not both', 'pnpm db:secrets:rotate app');
    for (const w of which)
      if (!ROTATABLE.includes(w)) throw new UsageError(`"${w}" is not a role secret`, `one of: ${ROTATABLE.join(', ')}`);
    const rt = await selectRuntime(ctx);
    const done: string[] = [];
    for (const w of which) done.push((await rotate(ctx, rt, w, { fromFile: Boolean(flags['from-file']) })).role);
    const restarted = which.includes('app') && (await rt.restartApp());
    ctx.log.result(
      `rotated the password of ${done.join(', ')}${restarted ? '; recreated the api service so it reads the new secret' : ''}`,
      { rotated: done, restarted },
    );
  },
};

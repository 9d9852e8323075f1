import { selectRuntime } from '@dbkit/core/runtime/select';
import { describe } from '@dbkit/core/migrations/runner';
import { parseCommand } from '@dbkit/core/migrations/command';
import { guardProduction } from '@dbkit/core/guard';
import type { Command } from '@dbkit/core/migrations/plan';
import { forceProductionFlag, guardOptions, type Args, type Task } from './task.ts';

export const task: Task<{ cmd: Command; args: Args }> = {
  name: 'db:migrate',
  summary: 'Apply migrations: up [N], down N, down --all, goto V (default: up).',
  usage: '[up [N] | down N | down --all | goto V]',
  destructive: { verbs: ['down', 'goto'] },
  flags: {
    all: { type: 'boolean', description: 'with down: roll back every migration' },
    'single-transaction': {
      type: 'boolean',
      description: 'the whole run in one transaction: all or nothing (native only; holds every lock to the end)',
    },
    ...forceProductionFlag,
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  // Usage errors (down two) come before a destructive run is refused.
  options: (args) => ({ cmd: parseCommand(args.positionals, Boolean(args.flags.all)), args }),
  async run(ctx, { cmd, args: { positionals, flags } }) {
    const rt = await selectRuntime(ctx);
    // Rolling back destroys data, as db:rollback does; goto may go either way.
    if (cmd.kind === 'down' || cmd.kind === 'goto') {
      const what =
        cmd.kind === 'goto'
          ? `Migrate to version ${cmd.version}?`
          : `Roll back ${cmd.n === 'all' ? 'every migration' : cmd.n === 1 ? 'the last migration' : `the last ${cmd.n} migrations`}?`;
      const question = `${what} Down files run and may drop tables with their data.`;
      await guardProduction(ctx, rt, 'db:migrate', guardOptions(flags), positionals.join(' ') + (flags.all ? ' --all' : ''), question);
    }
    const r = await rt.migrate(cmd, { singleTransaction: Boolean(flags['single-transaction']) });
    if (r) ctx.log.result(describe(r), r);
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { describe } from '@dbkit/core/migrations/runner';
import { parseCommand } from '@dbkit/core/migrations/command';
import { guardProduction } from '@dbkit/core/guard';
import { forceProductionFlag, guardOptions, type Task } from './task.ts';

export const task: Task = {
  name: 'db:migrate',
  summary: 'Apply migrations: up [N], down N, down --all, goto V (default: up).',
  usage: '[up [N] | down N | down --all | goto V]',
  flags: {
    all: { type: 'boolean', description: 'with down: roll back every migration' },
    'single-transaction': {
      type: 'boolean',
      description: 'the whole run in one transaction: all or nothing (native only; holds every lock to the end)',
    },
    ...forceProductionFlag,
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  async run(ctx, { positionals, flags }) {
    const cmd = parseCommand(positionals, Boolean(flags.all));
    const rt = await selectRuntime(ctx);
    // Rolling back destroys data, as db:rollback does; goto may go either way.
    if (cmd.kind === 'down' || cmd.kind === 'goto')
      await guardProduction(ctx, rt, 'db:migrate', guardOptions(flags), positionals.join(' ') + (flags.all ? ' --all' : ''));
    const r = await rt.migrate(cmd, { singleTransaction: Boolean(flags['single-transaction']) });
    if (r) ctx.log.result(describe(r), r);
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { withClient } from '@dbkit/core/pg';
import { loadMigrations } from '@dbkit/core/migrations/files';
import { status } from '@dbkit/core/migrations/runner';
import { applySeeds } from '@dbkit/core/seeds';
import { UserError } from '@dbkit/core/errors';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:seed',
  summary: 'Apply database/seeds/*.sql in order, each once (--reseed runs them all again).',
  flags: { reseed: { type: 'boolean', description: 'run every seed again, even those already applied' } },
  async run(ctx, { flags }) {
    const migrations = loadMigrations(ctx.cfg.migrationsDir);
    const rt = await selectRuntime(ctx);
    const r = await withClient(await rt.target('migrator'), async (c) => {
      const s = await status(c, migrations);
      if (s.pending.length || s.dirty) throw new UserError(`${s.dirty ? 'the database is dirty' : `${s.pending.length} migration(s) are pending`}; seeds run on a migrated schema`, 'run: pnpm db:migrate');
      return applySeeds(ctx, c, { reseed: Boolean(flags.reseed) });
    });
    ctx.log.result(r.applied.length ? `applied ${r.applied.length} seed(s): ${r.applied.join(', ')}` : 'no change', r);
  },
};

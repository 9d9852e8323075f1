import path from 'node:path';
import { loadMigrations, nextVersion } from '@dbkit/core/migrations/files';
import { UsageError, UserError } from '@dbkit/core/errors';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:migrate:create',
  summary: 'Create the next migration pair (NNNNNN_name.up.sql / .down.sql); touches no database.',
  usage: '<name>',
  needsNoRuntime: true,
  flags: { timestamp: { type: 'boolean', description: 'use a UTC timestamp (YYYYMMDDHHMMSS) instead of the next sequence number' } },
  async run(ctx, { positionals, flags }) {
    const name = positionals[0];
    if (!name || positionals.length > 1) throw new UsageError('db:migrate:create takes one name', 'pnpm db:migrate:create add_users_table');
    if (!/^[a-z0-9_]+$/i.test(name)) throw new UsageError(`"${name}" is not a migration name`, 'use letters, digits and underscores: pnpm db:migrate:create add_users_table');
    const dir = ctx.cfg.migrationsDir;
    await ctx.fs.mkdir(dir, { recursive: true });
    const existing = await loadMigrations(ctx, dir);
    const v = nextVersion(existing.map((m) => m.version), ctx.clock(), Boolean(flags.timestamp));
    const dirs = ['up', 'down'] as const;
    const files = dirs.map((d) => path.join(dir, `${v}_${name}.${d}.sql`));
    const made: string[] = [];
    try {
      for (const [i, f] of files.entries()) {
        // A file with only this comment counts as empty, so db:migrate refuses it until it is written.
        await ctx.fs.writeFile(f, `-- ${dirs[i]} migration ${v} ${name}: write it here (an empty file is refused)\n`, { flag: 'wx' }).catch((e) => {
          throw e.code === 'EEXIST' ? new UserError(`${path.basename(f)} already exists`, 'pick another name') : e;
        });
        made.push(f);
      }
    } catch (e) {
      for (const f of made) await ctx.fs.rm(f, { force: true }); // both files or neither
      throw e;
    }
    ctx.log.result(files.map((f) => path.relative(ctx.cfg.root, f)).join('\n'), { files });
  },
};

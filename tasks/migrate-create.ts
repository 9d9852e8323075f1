import path from 'node:path';
import { createMigration } from '@dbkit/core/migrations/create';
import { UsageError } from '@dbkit/core/errors';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:migrate:create',
  summary: 'Create the next migration pair (NNNNNN_name.up.sql / .down.sql); touches no database.',
  usage: '<name>',
  flags: { timestamp: { type: 'boolean', description: 'use a UTC timestamp (YYYYMMDDHHMMSS) instead of the next sequence number' } },
  async run(ctx, { positionals, flags }) {
    if (positionals.length !== 1) throw new UsageError('db:migrate:create takes one name', 'pnpm db:migrate:create add_users_table');
    const files = await createMigration(ctx, ctx.cfg.migrationsDir, positionals[0], Boolean(flags.timestamp));
    ctx.log.result(files.map((f) => path.relative(ctx.cfg.root, f)).join('\n'), { files });
  },
};

import path from 'node:path';
import { ensureSecrets } from '@dbkit/core/secrets';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:secrets',
  summary: 'Create the missing secret files (superuser, schema owner, app role, database); never overwrites without --force.',
  needsNoRuntime: true,
  flags: { force: { type: 'boolean', description: 'replace existing secrets (the database keeps its old password!)' } },
  async run(ctx, { flags }) {
    const question = ctx.interactive
      ? async (name: string, def: string) => {
          const { default: prompts } = await import('prompts');
          const a = await prompts({ type: 'text', name: 'v', message: name.replace('postgres_', 'database ').replace('db', 'name'), initial: def, stdout: process.stderr });
          return typeof a.v === 'string' && a.v ? a.v : def;
        }
      : undefined;
    const r = await ensureSecrets(ctx, { force: Boolean(flags.force), question });
    const where = path.relative(ctx.cfg.root, ctx.cfg.secretsDir) || ctx.cfg.secretsDir;
    const parts = [r.created.length ? `created ${r.created.join(', ')}` : '', r.kept.length ? `kept ${r.kept.join(', ')}` : ''].filter(Boolean);
    ctx.log.result(`${parts.join('; ')} in ${where}`, r);
  },
};

import path from 'node:path';
import { ensureSecrets } from '@dbkit/core/secrets';
import { beforeReplacingSecrets } from '@dbkit/core/secrets-force';
import { selectRuntime } from '@dbkit/core/runtime/select';
import { forceProductionFlag, guardOptions, type Task } from './task.ts';

export const task: Task = {
  name: 'db:secrets',
  summary: 'Create the missing secret files (superuser, schema owner, app role, database); never overwrites without --force.',
  destructive: { withFlag: 'force' },
  flags: {
    force: {
      type: 'boolean',
      description: 'replace the existing secrets, keeping the old ones beside them; asks, and refuses while a database cluster exists',
    },
    ...forceProductionFlag,
  },
  async run(ctx, { flags }) {
    const force = Boolean(flags.force);
    const kept = force ? await beforeReplacingSecrets(ctx, () => selectRuntime(ctx), guardOptions(flags)) : undefined;
    const question = ctx.interactive
      ? async (name: string, def: string) => {
          const a = await ctx.ask(name.replace('postgres_', 'database ').replace('db', 'name'), def);
          return typeof a === 'string' && a ? a : def;
        }
      : undefined;
    const r = await ensureSecrets(ctx, { force, question });
    const where = path.relative(ctx.cfg.root, ctx.cfg.secretsDir) || ctx.cfg.secretsDir;
    const parts = [r.created.length ? `created ${r.created.join(', ')}` : '', r.kept.length ? `kept ${r.kept.join(', ')}` : ''].filter(
      Boolean,
    );
    const old = kept ? `; the old files are in ${path.relative(ctx.cfg.root, kept) || kept}` : '';
    ctx.log.result(`${parts.join('; ')} in ${where}${old}`, { ...r, ...(kept && { replacedKeptIn: kept }) });
  },
};

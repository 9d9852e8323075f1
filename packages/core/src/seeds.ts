import path from 'node:path';
import type { Client } from 'pg';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { checksum, loadMigrations } from './migrations/files.ts';
import { status } from './migrations/runner.ts';
import { withClient } from './pg.ts';
import type { Runtime } from './runtime/runtime.ts';

export const SEEDS_TABLE = 'schema_seeds';

/** db:seed and db:fresh --seed: the seeds, on a migrated schema only. */
export async function seed(ctx: Pick<Ctx, 'cfg' | 'fs' | 'log'>, rt: Runtime, opts: { reseed: boolean }): Promise<{ applied: string[] }> {
  const migrations = loadMigrations(ctx.cfg.migrationsDir);
  return withClient(await rt.target('migrator'), async (c) => {
    const s = await status(c, migrations);
    if (s.pending.length || s.dirty)
      throw new UserError(
        `${s.dirty ? 'the database is dirty' : `${s.pending.length} migration(s) are pending`}; seeds run on a migrated schema`,
        'run: pnpm db:migrate',
      );
    return applySeeds(ctx, c, opts);
  });
}

/** Applies `*.sql` from the seeds folder in name order, each in its own transaction, each once. */
export async function applySeeds(
  ctx: Pick<Ctx, 'cfg' | 'fs' | 'log'>,
  c: Client,
  opts: { reseed: boolean },
): Promise<{ applied: string[] }> {
  const dir = ctx.cfg.seedsDir;
  const files = (await ctx.fs.readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.sql')).sort();
  await c.query(
    `CREATE TABLE IF NOT EXISTS ${SEEDS_TABLE} (name text primary key, checksum text not null, applied_at timestamptz not null default now())`,
  );
  const done = new Set((await c.query(`SELECT name FROM ${SEEDS_TABLE}`)).rows.map((r) => r.name as string));
  const applied: string[] = [];
  for (const f of files) {
    if (done.has(f) && !opts.reseed) continue;
    const sql = await ctx.fs.readFile(path.join(dir, f), 'utf8');
    await c.query('BEGIN');
    try {
      await c.query(sql);
      await c.query(
        `INSERT INTO ${SEEDS_TABLE} (name, checksum) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()`,
        [f, checksum(sql)],
      );
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {}); // the seed's own error is the one to report
      throw new UserError(`seed ${f}: ${(e as Error).message}`, 'fix the file; the failed seed was rolled back');
    }
    applied.push(f);
  }
  return { applied };
}

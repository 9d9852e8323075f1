import path from 'node:path';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { confirmDestructive } from './confirm.ts';
import { withClient } from './pg.ts';
import { GUARD_SCHEMA, PRODUCTION, SETUP_SQL, osUser, recordedEnvironment } from './environment.ts';
import type { Runtime } from './runtime/runtime.ts';
import { createBackup } from './backup/backup.ts';
import { shown } from './backup/store.ts';
import { status } from './migrations/runner.ts';
import { loadMigrations } from './migrations/files.ts';
import { applySeeds } from './seeds.ts';

export interface AuditEntry {
  at: string;
  task: string;
  environment: string;
  os_user: string;
  detail: string;
}

/**
 * Writes who forced a task on production, and when: into the database's audit table (when it can be
 * reached) and, because db:delete and db:fresh destroy that table, a line in DB_BACKUP_DIR/audit.log.
 */
export async function writeAudit(ctx: Pick<Ctx, 'cfg' | 'fs' | 'log'>, rt: Runtime | undefined, e: AuditEntry, toFile = true): Promise<void> {
  if (toFile) {
    try {
      await ctx.fs.mkdir(ctx.cfg.backupDir, { recursive: true, mode: 0o700 });
      await ctx.fs.appendFile(path.join(ctx.cfg.backupDir, 'audit.log'), JSON.stringify(e) + '\n', { mode: 0o600 });
    } catch (err) {
      // The database's own audit table below still gets the line; the backup that follows will fail loudly.
      ctx.log.warn(`could not append to ${shown(ctx, path.join(ctx.cfg.backupDir, 'audit.log'))}: ${(err as Error).message}`);
    }
  }
  if (!rt || !(await rt.running())) return;
  await withClient({ ...(await rt.target('migrator')), applicationName: 'pg-deploy guard' }, async (c) => {
    await c.query(SETUP_SQL).catch(() => c.query(SETUP_SQL));
    await c.query(`INSERT INTO ${GUARD_SCHEMA}.audit (at, task, environment, os_user, detail) VALUES ($1, $2, $3, $4, $5)`, [e.at, e.task, e.environment, e.os_user, e.detail]);
  });
}

export interface GuardFlags {
  'force-production'?: string | boolean;
  'no-backup'?: string | boolean;
  yes?: string | boolean;
}

/**
 * Refuses `task` on a production database (recorded as production, or NODE_ENV=production now)
 * unless --force-production. With a question, asks it next (default No). A forced run that goes
 * ahead is logged; one refused or declined is not, since nothing happened.
 */
export async function guardProduction(ctx: Ctx, rt: Runtime, task: string, flags: GuardFlags, detail = '', question?: string): Promise<AuditEntry | undefined> {
  if (question !== undefined) await refuseUnanswerable(ctx, task, question, flags);
  const recorded = await recordedEnvironment(await rt.target('migrator')).catch((e) => {
    throw new UserError(`${task}: cannot read which environment this database belongs to: ${(e as Error).message}`, 'is PostgreSQL running? pnpm db:up');
  });
  const entry = decide(ctx, task, flags, recorded, detail);
  if (question !== undefined) await confirmDestructive(ctx, task, question, Boolean(flags.yes));
  if (entry) await writeAudit(ctx, rt, entry);
  return entry;
}

function decide(ctx: Ctx, task: string, flags: GuardFlags, recorded: string | undefined, detail: string): AuditEntry | undefined {
  const why = recorded === PRODUCTION ? 'the database is recorded as production' : ctx.cfg.nodeEnv === PRODUCTION ? 'NODE_ENV is production' : undefined;
  if (!why) return undefined;
  if (!flags['force-production']) {
    throw new UserError(`${task} refused: ${why}`, `nothing was changed; if you really mean it, run it again with --force-production (who and when are logged)`);
  }
  const entry: AuditEntry = { at: ctx.clock().toISOString(), task, environment: recorded ?? ctx.cfg.nodeEnv, os_user: osUser(ctx.cfg.env), detail };
  ctx.log.warn(`${task} on a production database (${why}), forced by ${entry.os_user}; logged`);
  return entry;
}

/** A question nobody can answer (no terminal, no --yes) is refused before anything else is done or asked of the server. */
async function refuseUnanswerable(ctx: Ctx, task: string, question: string, flags: GuardFlags): Promise<void> {
  if (!flags.yes && !ctx.interactive) await confirmDestructive(ctx, task, question, false);
}

/**
 * Everything before db:delete or db:fresh destroys the data: the production guard, the question,
 * and a safety backup (unless --no-backup). A stopped server can neither be backed up nor asked
 * what it is, so destroying its data then needs both --no-backup and --force-production.
 */
export async function beforeDestroy(ctx: Ctx, rt: Runtime, task: string, question: string, flags: GuardFlags): Promise<AuditEntry | undefined> {
  await refuseUnanswerable(ctx, task, question, flags);
  if (!(await rt.running())) {
    if (await rt.hasData()) {
      if (!(flags['no-backup'] && flags['force-production'])) {
        throw new UserError(
          `${task} refused: PostgreSQL is stopped, so no safety backup can be taken and its environment cannot be read`,
          `start it (pnpm db:up) and run ${task} again; to delete it anyway without a backup: pnpm ${task} --no-backup --force-production`,
        );
      }
      await confirmDestructive(ctx, task, question, Boolean(flags.yes));
      const entry: AuditEntry = { at: ctx.clock().toISOString(), task, environment: 'unknown (server stopped)', os_user: osUser(ctx.cfg.env), detail: 'no backup' };
      await writeAudit(ctx, undefined, entry);
      return entry;
    }
    await confirmDestructive(ctx, task, question, Boolean(flags.yes));
    return undefined;
  }
  const entry = await guardProduction(ctx, rt, task, flags, '', question);
  if (flags['no-backup']) {
    ctx.log.warn(`${task}: no safety backup (--no-backup)`);
    return entry;
  }
  ctx.log.step('taking a safety backup first');
  const b = await createBackup(ctx, rt, { reason: `before ${task}` }).catch((e) => {
    const fix = (e as UserError).hint ?? 'see the message above';
    throw new UserError(`${task}: the safety backup failed, so nothing was deleted: ${(e as Error).message}`, `${fix}; or, to go ahead without one: pnpm ${task} --no-backup`);
  });
  ctx.log.info(`safety backup: ${shown(ctx, b.dir)}`);
  return entry;
}

/** After db:fresh rebuilt the database: the forced run's audit line in the new database, then seeds with --seed. */
export async function afterFresh(ctx: Ctx, rt: Runtime, opts: { seed: boolean; audit?: AuditEntry }): Promise<string[]> {
  if (opts.audit) await writeAudit(ctx, rt, opts.audit, false);
  if (!opts.seed) return [];
  const migrations = loadMigrations(ctx.cfg.migrationsDir);
  return withClient(await rt.target('migrator'), async (c) => {
    const s = await status(c, migrations);
    if (s.pending.length || s.dirty) throw new UserError('migrations are pending or dirty after db:fresh; seeds were not run', 'pnpm db:status');
    const { applied } = await applySeeds(ctx, c, { reseed: false });
    ctx.log.info(applied.length ? `seeded: ${applied.join(', ')}` : 'no seed files to run');
    return applied;
  });
}

/** The flags every guarded task takes. */
export const forceProductionFlag = {
  'force-production': { type: 'boolean' as const, description: 'allow it on a production database (who and when are logged)' },
};
export const noBackupFlag = {
  'no-backup': { type: 'boolean' as const, description: 'skip the safety backup taken first' },
};

/** What db:delete would remove, one line each, for --dry-run: each database with its size, then the storage. */
export async function deletionPlan(ctx: Ctx, rt: Runtime): Promise<string[]> {
  const lines: string[] = [];
  if (await rt.running()) {
    const rows = await (await rt.admin()).query('SELECT datname, pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE NOT datistemplate ORDER BY 1');
    for (const [name, size] of rows) lines.push(`  database ${name} (${size})`);
  } else {
    lines.push('  (PostgreSQL is stopped: its databases cannot be listed)');
  }
  lines.push(`  storage: ${rt.describeData()}`);
  lines.push(`  kept: the backups in ${shown(ctx, ctx.cfg.backupDir)}, the secrets and the certificates`);
  return lines;
}

/**
 * The production guard and the question for a task that has no database to ask (db:secrets
 * --force, which refuses outright while a cluster exists): NODE_ENV=production needs
 * --force-production, and a forced run is logged in DB_BACKUP_DIR/audit.log.
 */
export async function guardWithoutDatabase(ctx: Ctx, task: string, flags: GuardFlags, detail: string, question: string): Promise<AuditEntry | undefined> {
  await refuseUnanswerable(ctx, task, question, flags);
  const entry = decide(ctx, task, flags, undefined, detail);
  await confirmDestructive(ctx, task, question, Boolean(flags.yes));
  if (entry) await writeAudit(ctx, undefined, entry);
  return entry;
}

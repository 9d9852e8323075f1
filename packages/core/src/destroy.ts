import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { guardProduction, type GuardOptions } from './guard.ts';
import { auditEntry, writeAudit, type AuditEntry } from './audit.ts';
import type { Runtime } from './runtime/runtime.ts';
import { createBackup } from './backup/backup.ts';
import { shown } from './backup/store.ts';

export interface DestroyOptions extends GuardOptions {
  /** Skip the safety backup (--no-backup). */
  noBackup: boolean;
}

/** Before db:delete or db:fresh: the guard, the question, a safety backup; a stopped server (no backup, no environment) needs both overrides. */
export async function beforeDestroy(
  ctx: Ctx,
  rt: Runtime,
  task: string,
  question: string,
  opts: DestroyOptions,
): Promise<AuditEntry | undefined> {
  if (await rt.running()) {
    const entry = await guardProduction(ctx, rt, task, opts, '', question);
    await safetyBackup(ctx, rt, task, opts);
    return entry;
  }
  if (!(await rt.hasData())) {
    await ctx.confirm(question);
    return undefined;
  }
  if (!(opts.noBackup && opts.forceProduction)) {
    throw new UserError(
      `${task} refused: PostgreSQL is stopped, so no safety backup can be taken and its environment cannot be read`,
      `start it (pnpm db:up) and run ${task} again; to delete it anyway without a backup: pnpm ${task} --no-backup --force-production`,
    );
  }
  await ctx.confirm(question);
  const entry = auditEntry(ctx, task, 'unknown (server stopped)', 'no backup');
  await writeAudit(ctx, undefined, entry);
  return entry;
}

/** A backup of what `task` is about to replace or delete, unless noBackup; its failure stops the task. */
export async function safetyBackup(ctx: Ctx, rt: Runtime, task: string, opts: Pick<DestroyOptions, 'noBackup'>): Promise<void> {
  if (opts.noBackup) {
    ctx.log.warn(`${task}: no safety backup (--no-backup)`);
    return;
  }
  ctx.log.step('taking a safety backup first');
  const b = await createBackup(ctx, rt, { reason: `before ${task}` }).catch((e) => {
    const fix = (e as UserError).hint ?? 'see the message above';
    throw new UserError(
      `${task}: the safety backup failed, so nothing was deleted: ${(e as Error).message}`,
      `${fix}; or, to go ahead without one: pnpm ${task} --no-backup`,
    );
  });
  ctx.log.info(`safety backup: ${shown(ctx, b.dir)}`);
}

/** What db:delete would remove, one line each (--dry-run): each database with its size, then the storage. */
export async function deletionPlan(ctx: Ctx, rt: Runtime): Promise<string[]> {
  const lines: string[] = [];
  if (await rt.running()) {
    const rows = await (
      await rt.admin()
    ).query('SELECT datname, pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE NOT datistemplate ORDER BY 1');
    for (const [name, size] of rows) lines.push(`  database ${name} (${size})`);
  } else {
    lines.push('  (PostgreSQL is stopped: its databases cannot be listed)');
  }
  lines.push(`  storage: ${rt.describeData()}`);
  lines.push(`  kept: the backups in ${shown(ctx, ctx.cfg.backupDir)}, the secrets and the certificates`);
  return lines;
}

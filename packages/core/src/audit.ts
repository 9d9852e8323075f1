import path from 'node:path';
import type { Ctx } from './context.ts';
import { withClient } from './pg.ts';
import { GUARD_SCHEMA, ensureGuardTables, osUser } from './environment.ts';
import type { Runtime } from './runtime/runtime.ts';
import { shown } from './backup/store.ts';

/** One forced run on production: who, when, what. */
export interface AuditEntry {
  at: string;
  task: string;
  environment: string;
  os_user: string;
  detail: string;
}

/** An audit line stamped now, by whoever runs this. */
export function auditEntry(ctx: Pick<Ctx, 'cfg' | 'clock'>, task: string, environment: string, detail: string): AuditEntry {
  return { at: ctx.clock().toISOString(), task, environment, os_user: osUser(ctx.cfg.sudoUser), detail };
}

/** The audit line in DB_BACKUP_DIR/audit.log and, when the server runs, in the database. */
export async function writeAudit(ctx: Pick<Ctx, 'cfg' | 'fs' | 'log'>, rt: Runtime | undefined, e: AuditEntry): Promise<void> {
  await appendAuditFile(ctx, e);
  if (rt) await insertAudit(rt, e);
}

/** The file outlives db:delete and db:fresh, which destroy the database's table. */
async function appendAuditFile(ctx: Pick<Ctx, 'cfg' | 'fs' | 'log'>, e: AuditEntry): Promise<void> {
  const file = path.join(ctx.cfg.backupDir, 'audit.log');
  try {
    await ctx.fs.mkdir(ctx.cfg.backupDir, { recursive: true, mode: 0o700 });
    await ctx.fs.appendFile(file, JSON.stringify(e) + '\n', { mode: 0o600 });
  } catch (err) {
    // A warning only: the database's table still gets the line, and the safety backup that follows fails loudly.
    ctx.log.warn(`could not append to ${shown(ctx, file)}: ${(err as Error).message}`);
  }
}

/** The line in the database's audit table, when the server runs: also after db:fresh or db:restore replaced it. */
export async function insertAudit(rt: Runtime, e: AuditEntry): Promise<void> {
  if (!(await rt.running())) return;
  await withClient({ ...(await rt.target('migrator')), applicationName: 'pg-deploy guard' }, async (c) => {
    await ensureGuardTables(c);
    await c.query(`INSERT INTO ${GUARD_SCHEMA}.audit (at, task, environment, os_user, detail) VALUES ($1, $2, $3, $4, $5)`, [
      e.at,
      e.task,
      e.environment,
      e.os_user,
      e.detail,
    ]);
  });
}

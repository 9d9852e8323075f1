import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { PRODUCTION, recordEnvironment, recordedEnvironment } from './environment.ts';
import { auditEntry, insertAudit, writeAudit, type AuditEntry } from './audit.ts';
import type { Runtime } from './runtime/runtime.ts';

export interface GuardOptions {
  /** The person said a production database may be changed (--force-production). */
  forceProduction: boolean;
}

/** Refuses `task` on production (recorded, or NODE_ENV) unless forced, then asks `question`; a forced run is logged. */
export async function guardProduction(
  ctx: Ctx,
  rt: Runtime,
  task: string,
  opts: GuardOptions,
  detail = '',
  question?: string,
): Promise<AuditEntry | undefined> {
  const recorded = await recordedEnvironment(await rt.target('migrator')).catch((e) => {
    throw new UserError(
      `${task}: cannot read which environment this database belongs to: ${(e as Error).message}`,
      'is PostgreSQL running? pnpm db:up',
    );
  });
  const entry = decide(ctx, task, opts, recorded, detail);
  if (question !== undefined) await ctx.confirm(question);
  if (entry) await writeAudit(ctx, rt, entry);
  return entry;
}

/** The guard for a task with no database to ask (db:secrets --force): NODE_ENV alone decides; the log is the file. */
export async function guardWithoutDatabase(
  ctx: Ctx,
  task: string,
  opts: GuardOptions,
  detail: string,
  question: string,
): Promise<AuditEntry | undefined> {
  const entry = decide(ctx, task, opts, undefined, detail);
  await ctx.confirm(question);
  if (entry) await writeAudit(ctx, undefined, entry);
  return entry;
}

/** The audit line of a forced production run, undefined outside production; throws when not forced. */
function decide(ctx: Ctx, task: string, opts: GuardOptions, recorded: string | undefined, detail: string): AuditEntry | undefined {
  const why =
    recorded === PRODUCTION
      ? 'the database is recorded as production'
      : ctx.cfg.nodeEnv === PRODUCTION
        ? 'NODE_ENV is production'
        : undefined;
  if (!why) return undefined;
  if (!opts.forceProduction) {
    throw new UserError(
      `${task} refused: ${why}`,
      `nothing was changed; if you really mean it, run it again with --force-production (who and when are logged)`,
    );
  }
  const entry = auditEntry(ctx, task, recorded ?? ctx.cfg.nodeEnv, detail);
  ctx.log.warn(`${task} on a production database (${why}), forced by ${entry.os_user}; logged`);
  return entry;
}

/** After a forced run rebuilt or replaced the database: its audit line in it, and production stays production whatever came in. */
export async function afterForcedReplace(ctx: Pick<Ctx, 'cfg'>, rt: Runtime, audit: AuditEntry | undefined): Promise<void> {
  if (!audit) return;
  await insertAudit(rt, audit);
  if (audit.environment === PRODUCTION) await recordEnvironment(ctx, await rt.target('migrator'), PRODUCTION);
}

import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { waitFor } from '../wait.ts';
import { checkPhysical, listPhysical, type PhysicalBackup } from './physical.ts';
import { pitrOf } from './pitr-runtime.ts';
import { shown } from './store.ts';
import { archivedSegments, checkArchive, formatLsn, parseLsn, segmentOf, targetText, type RecoveryTarget } from './wal.ts';

/** The newest base backup consistent before `target`, checked against its checksums. */
export async function pickBase(ctx: Pick<Ctx, 'fs' | 'cfg'>, target: RecoveryTarget): Promise<PhysicalBackup> {
  const all = await listPhysical(ctx);
  const rel = shown(ctx, ctx.cfg.backupDir);
  if (!all.length)
    throw new UserError(
      `no base backup in ${rel}, so there is nothing to replay WAL onto`,
      'take one (and keep taking them): pnpm db:backup --physical',
    );
  const before = (b: PhysicalBackup) =>
    target.kind === 'time' ? Date.parse(b.manifest.finishedAt) < target.at.getTime() : parseLsn(b.manifest.endLsn) <= target.lsn;
  const base = all.find(before);
  if (!base) {
    const oldest = all[all.length - 1].manifest;
    throw new UserError(
      `${targetText(target)} is before the oldest base backup (${oldest.name}, consistent from ${target.kind === 'time' ? oldest.finishedAt : oldest.endLsn}); nothing was changed`,
      `pick a later target, or restore a logical backup instead: pnpm db:restore`,
    );
  }
  await checkPhysical(ctx, base);
  return base;
}

export interface RecoveryPlan {
  base: PhysicalBackup;
  archive: string;
  segments: number;
}

/**
 * Everything checked before anything is touched: the base backup, and an archive with every segment
 * from that backup's start to past the target. A running server first archives what it has written
 * up to now (a commit, so a time target has a record after it to stop at, then a segment switch).
 */
export async function planRecovery(ctx: Ctx, rt: Runtime, target: RecoveryTarget): Promise<RecoveryPlan> {
  const base = await pickBase(ctx, target);
  const { archive } = pitrOf(rt);
  if (await rt.running()) await archiveUpToNow(ctx, rt);
  const m = base.manifest;
  const segments = archivedSegments(await archive.files(), m.segmentBytes);
  const start = { segno: segmentOf(parseLsn(m.startLsn), m.segmentBytes), timeline: m.timeline };
  const where = await archive.where();
  const { count } = checkArchive(segments, start, target, m.segmentBytes, where);
  return { base, archive: where, segments: count };
}

async function archiveUpToNow(ctx: Ctx, rt: Runtime): Promise<void> {
  const admin = await rt.admin();
  await admin.query('SELECT pg_current_xact_id()'); // a commit record, stamped now
  const [[wal]] = await admin.query('SELECT pg_walfile_name(pg_switch_wal())');
  let failed = '';
  await waitFor(
    ctx,
    'archiving the WAL written so far',
    Math.max(ctx.cfg.upTimeoutMs, 60_000),
    async () => {
      const [[last, lastFailed]] = await admin.query(
        "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver",
      );
      failed = lastFailed === wal ? wal : '';
      return last.length === 24 && last.slice(8) >= wal.slice(8);
    },
    () =>
      `the server did not archive ${wal} within ${Math.max(ctx.cfg.upTimeoutMs, 60_000) / 1000}s${failed ? ' (its archive_command fails; see pnpm db:logs)' : ''}; nothing was changed`,
  );
}

export interface RecoveryResult {
  base: string;
  target: string;
  stopped: string;
  lsn: string;
  timeline: number;
  segments: number;
  ms: number;
}

/**
 * Replaces the data directory with the base backup and replays the archive to the target, then
 * promotes. The old data directory stays aside until the recovered server has answered; any failure
 * puts it back (and starts it again if it ran).
 */
export async function recoverTo(ctx: Ctx, rt: Runtime, plan: RecoveryPlan, target: RecoveryTarget): Promise<RecoveryResult> {
  const t0 = performance.now();
  const { log } = ctx;
  const pitr = pitrOf(rt);
  const swap = pitr.swap();
  const wasRunning = await rt.running();
  if (wasRunning) {
    log.step('stopping PostgreSQL');
    await swap.stop();
  }
  const hadData = await swap.setAside();
  try {
    log.step(`restoring the base backup ${plan.base.manifest.name}`);
    // For this start only: recovery.signal goes when recovery ends, and the settings are reset below.
    // postgresql.auto.conf's quoting: a value in single quotes, a quote inside doubled.
    const conf = (v: string) => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
    await swap.restore(plan.base, [
      `restore_command = ${conf(await pitr.archive.restoreCommand())}`,
      target.kind === 'time' ? `recovery_target_time = ${conf(target.text)}` : `recovery_target_lsn = ${conf(formatLsn(target.lsn))}`,
      `recovery_target_action = 'promote'`,
    ]);
    log.step(`replaying ${plan.segments} archived WAL segment(s) to ${targetText(target)}`);
    await swap.start();
    const admin = await rt.admin();
    await waitFor(
      ctx,
      'replaying WAL',
      6 * 3_600_000, // a failure ends the wait at once; a long replay is only slow
      async () => {
        try {
          const [[inRecovery]] = await admin.query('SELECT pg_is_in_recovery()::text');
          return inRecovery === 'false';
        } catch (e) {
          const failed = await swap.failed();
          if (failed) throw new UserError(`the recovery failed: ${failed}`, swap.logHint);
          void e; // starting up, or not yet consistent: asked again
          return false;
        }
      },
      () => 'the recovery did not end',
      100,
    );
    for (const k of ['restore_command', 'recovery_target_time', 'recovery_target_lsn', 'recovery_target_action'])
      await admin.query(`ALTER SYSTEM RESET ${k}`);
    const [[lsn, checkpointTimeline]] = await admin.query(
      'SELECT pg_current_wal_lsn()::text, timeline_id::text FROM pg_control_checkpoint()',
    );
    const text = await swap.log();
    // The end-of-recovery checkpoint may not have run yet: the log names the new timeline at once.
    const timeline = /selected new timeline ID: (\d+)/.exec(text)?.[1] ?? checkpointTimeline;
    const stopped =
      /recovery stopping (?:before|after) [^\n]*/.exec(text)?.[0] ??
      /last completed transaction was at log time [^\n]*/.exec(text)?.[0] ??
      'the end of the archived WAL';
    log.step('provisioning and checking the logins');
    await rt.up();
    await swap.dropAside();
    return {
      base: plan.base.manifest.name,
      target: targetText(target),
      stopped: stopped.trim(),
      lsn,
      timeline: Number(timeline),
      segments: plan.segments,
      ms: Math.round(performance.now() - t0),
    };
  } catch (e) {
    log.warn('the recovery failed: putting the data directory back as it was');
    await swap.putBack(hadData);
    if (wasRunning) await rt.up().catch((err: Error) => log.warn(`could not start it again: ${err.message}; run pnpm db:up`));
    if (e instanceof UserError) throw new UserError(`${e.message}; the data directory is back as it was`, e.hint);
    throw e;
  }
}

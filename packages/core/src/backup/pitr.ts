import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { waitFor } from '../wait.ts';
import { checkPhysical, listPhysical } from './physical.ts';
import type { PhysicalBackup } from './physical-layout.ts';
import { pitrOf } from './pitr-runtime.ts';
import { ifMissing, shown, writeAtomic } from './store.ts';
import { pidAlive } from './leftovers.ts';
import path from 'node:path';
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

/**
 * Where a recovery stands, on the host, so that a killed one can be finished or rolled back: before
 * the server is stopped and the data set aside (`stopping`), once it is aside (`set-aside`: the base
 * backup is being restored and replayed), once the recovered server has promoted and its recovery
 * settings are reset (`recovered`). Removed when the recovery ends either way.
 */
export interface RecoveryState {
  pid: number;
  /** Where it ran (placeOf): Compose and Swarm are both the docker runtime, and may share DB_BACKUP_DIR. */
  place: string;
  step: 'stopping' | 'set-aside' | 'recovered';
  /** Whether there was a data directory to set aside (known from `set-aside` on). */
  hadData?: boolean;
  base: string;
  target: string;
  at: string;
}

/** The runtime and, for docker, its target: a state file is acted on only where it was written. */
const placeOf = (ctx: Pick<Ctx, 'cfg'>, rt: Pick<Runtime, 'label'>): string => `${rt.label}/${ctx.cfg.target}`;

/** The recovery's state file, in DB_BACKUP_DIR (a hidden name: no backup). */
export const recoveryStateFile = (ctx: Pick<Ctx, 'cfg'>): string => path.join(ctx.cfg.backupDir, '.pitr-recovery.json');

async function readRecoveryState(ctx: Pick<Ctx, 'fs' | 'cfg'>): Promise<RecoveryState | undefined> {
  const text = await ifMissing(ctx.fs.readFile(recoveryStateFile(ctx), 'utf8'), undefined);
  if (text === undefined) return undefined;
  try {
    const s = JSON.parse(text) as RecoveryState;
    return typeof s.pid === 'number' && typeof s.step === 'string' ? s : undefined;
  } catch {
    return undefined; // unreadable: nothing it says can be acted on (writeAtomic never leaves half a file)
  }
}

/**
 * Finishes or rolls back a db:restore --to-time/--to-lsn that was killed, saying what it did in one
 * line through `say`: recovered (promoted, settings reset), the old data set aside is removed;
 * otherwise the server started on the half-recovered data (if any) is stopped and the old data
 * directory put back (or the half-restored one removed, when there was none). db:up and db:restore
 * run it before anything else. A recovery still running (its pid alive) is refused.
 */
export async function repairInterruptedRecovery(
  ctx: Ctx,
  rt: Runtime,
  say: (line: string) => void = (l) => ctx.log.warn(l),
): Promise<void> {
  const s = await readRecoveryState(ctx);
  if (!s || s.place !== placeOf(ctx, rt)) return;
  const file = recoveryStateFile(ctx);
  if (s.pid === process.pid || pidAlive(s.pid))
    throw new UserError(
      `a db:restore --to-time/--to-lsn (pid ${s.pid}) is replacing the data directory with ${s.base}`,
      `wait for it to finish; if pid ${s.pid} is not pg-deploy, remove ${shown(ctx, file)} and run this again`,
    );
  const swap = pitrOf(rt).swap(s.pid);
  const what = `an interrupted db:restore to ${s.target} (pid ${s.pid}, from ${s.base})`;
  if (!swap.hasAside) {
    say(`${what} left the old data set aside; this runtime cannot put it back itself: see the README (Point-in-time recovery)`);
    return;
  }
  const aside = await swap.hasAside();
  if (s.step === 'recovered') {
    if (aside) await swap.dropAside();
    say(
      `finished ${what}: its recovery had completed; ${aside ? 'the old data directory it had set aside is removed' : 'nothing was left aside'}`,
    );
  } else {
    // `stopping`: the data is aside exactly when the rename happened.
    const hadData = s.step === 'stopping' ? aside : Boolean(s.hadData);
    if (hadData && aside) {
      await swap.putBack(true);
      say(`rolled back ${what}: its recovery had not completed; the data directory is back as it was before it`);
    } else if (!hadData && s.step === 'set-aside') {
      await swap.putBack(false);
      say(
        `rolled back ${what}: its recovery had not completed and there was no data directory before it; the half-restored one is removed`,
      );
    }
    // Otherwise nothing was moved yet, or the old data is back already (put back before the kill).
  }
  await ctx.fs.rm(file, { force: true });
}

async function recordRecovery(ctx: Ctx, s: RecoveryState): Promise<void> {
  await writeAtomic(ctx, recoveryStateFile(ctx), JSON.stringify(s) + '\n');
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
  const state: RecoveryState = {
    pid: process.pid,
    place: placeOf(ctx, rt),
    step: 'stopping',
    base: plan.base.manifest.name,
    target: targetText(target),
    at: ctx.clock().toISOString(),
  };
  await recordRecovery(ctx, state);
  if (wasRunning) {
    log.step('stopping PostgreSQL');
    await swap.stop();
  }
  const hadData = await swap.setAside();
  await recordRecovery(ctx, { ...state, step: 'set-aside', hadData });
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
    await recordRecovery(ctx, { ...state, step: 'recovered', hadData });
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
    await ctx.fs.rm(recoveryStateFile(ctx), { force: true });
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
    await ctx.fs.rm(recoveryStateFile(ctx), { force: true });
    if (wasRunning) await rt.up().catch((err: Error) => log.warn(`could not start it again: ${err.message}; run pnpm db:up`));
    if (e instanceof UserError) throw new UserError(`${e.message}; the data directory is back as it was`, e.hint);
    throw e;
  }
}

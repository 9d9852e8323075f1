import { selectRuntime } from '@dbkit/core/runtime/select';
import { repairBeforeRestore, restoreBackup } from '@dbkit/core/backup/restore';
import { resolveBackup } from '@dbkit/core/backup/store';
import { checkIntegrity } from '@dbkit/core/backup/integrity';
import { parseJobs, restoreJobs } from '@dbkit/core/backup/format';
import { afterForcedReplace, guardProduction } from '@dbkit/core/guard';
import { safetyBackup, type DestroyOptions } from '@dbkit/core/destroy';
import { planRecovery, recoverTo, repairInterruptedRecovery } from '@dbkit/core/backup/pitr';
import { parseLsn, parseTime, type RecoveryTarget } from '@dbkit/core/backup/wal';
import { guardWithoutDatabase } from '@dbkit/core/guard';
import { UsageError } from '@dbkit/core/errors';
import { forceProductionFlag, guardOptions, noBackupFlag, pitrFlags, restoreJobsFlag, type Args, type Task } from './task.ts';

/** --to-time or --to-lsn, checked before anything else: one of them, never with a logical backup's arguments. */
function recoveryTarget({ positionals, flags }: Args): RecoveryTarget | undefined {
  const time = flags['to-time'] as string | undefined;
  const lsn = flags['to-lsn'] as string | undefined;
  if (time === undefined && lsn === undefined) return undefined;
  if (time !== undefined && lsn !== undefined)
    throw new UsageError(
      '--to-time and --to-lsn name the same thing two ways: give one',
      'pnpm db:restore --to-time "2026-12-01 14:03:07"',
    );
  if (positionals.length || flags.jobs !== undefined)
    throw new UsageError(
      `--to-${time !== undefined ? 'time' : 'lsn'} replays WAL onto the newest base backup before it: it takes no ${positionals.length ? 'BACKUP' : '--jobs'}`,
      'drop it; a logical backup is restored with pnpm db:restore [BACKUP]',
    );
  return time !== undefined ? parseTime(time) : { kind: 'lsn', lsn: parseLsn(lsn!), text: lsn!.trim() };
}

export const task: Task<{ backup?: string; jobs?: number; opts: DestroyOptions; target?: RecoveryTarget }> = {
  name: 'db:restore',
  summary:
    'Replace the database with a backup (default: the newest verified), or the whole cluster with a base backup replayed to --to-time/--to-lsn; a safety backup is taken first.',
  usage: '[BACKUP]',
  destructive: true,
  flags: {
    ...noBackupFlag,
    ...forceProductionFlag,
    ...restoreJobsFlag,
    ...pitrFlags,
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  options: ({ positionals, flags }) => ({
    target: recoveryTarget({ positionals, flags }),
    backup: positionals[0],
    jobs: parseJobs(flags.jobs as string | undefined),
    opts: guardOptions(flags),
  }),
  async run(ctx, { backup, jobs, opts, target }) {
    if (target) {
      const rt = await selectRuntime(ctx);
      await repairInterruptedRecovery(ctx, rt); // a killed db:restore --to-time: finished, or the old data put back
      // Everything is checked (base backup, checksums, every archived segment) before anything is asked.
      const plan = await planRecovery(ctx, rt, target);
      const question = `Replace the whole cluster with ${plan.base.manifest.name} replayed to ${target.text}?`;
      const up = await rt.running();
      const audit = up
        ? await guardProduction(ctx, rt, 'db:restore', opts, plan.base.manifest.name, question)
        : await guardWithoutDatabase(ctx, 'db:restore', opts, plan.base.manifest.name, question);
      if (up) await safetyBackup(ctx, rt, 'db:restore', opts);
      else ctx.log.warn('db:restore: no safety backup (PostgreSQL is not running)');
      const r = await recoverTo(ctx, rt, plan, target);
      await afterForcedReplace(ctx, rt, audit);
      ctx.log.result(`recovered to ${r.target} from ${r.base} in ${r.ms} ms: ${r.stopped}; now on timeline ${r.timeline} at ${r.lsn}`, r);
      return;
    }
    const b = await resolveBackup(ctx, backup, { verifiedOnly: true });
    restoreJobs(b.manifest, jobs); // --jobs on a custom-format backup is refused before anything is asked
    const checked = await checkIntegrity(ctx, b); // a damaged file is refused before anything is asked or changed
    const rt = await selectRuntime(ctx);
    // The guard, the safety backup and the restore all connect: put right what a killed restore left first.
    await repairInterruptedRecovery(ctx, rt);
    await repairBeforeRestore(ctx, rt);
    const audit = await guardProduction(
      ctx,
      rt,
      'db:restore',
      opts,
      b.manifest.name,
      `Replace database ${b.manifest.database} with the backup ${b.manifest.name}?`,
    );
    await safetyBackup(ctx, rt, 'db:restore', opts);
    const r = await restoreBackup(ctx, rt, checked, { jobs });
    await afterForcedReplace(ctx, rt, audit); // a development backup must not lower a production database's guard
    ctx.log.result(
      `restored ${b.manifest.name} as ${r.database} in ${r.ms} ms${r.rolesCreated ? ` (${r.rolesCreated} role(s) created)` : ''}`,
      { name: b.manifest.name, ...r },
    );
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { repairBeforeRestore, restoreBackup } from '@dbkit/core/backup/restore';
import { resolveBackup } from '@dbkit/core/backup/store';
import { checkIntegrity } from '@dbkit/core/backup/integrity';
import { parseJobs, restoreJobs } from '@dbkit/core/backup/format';
import { afterForcedReplace, guardProduction } from '@dbkit/core/guard';
import { safetyBackup, type DestroyOptions } from '@dbkit/core/destroy';
import { forceProductionFlag, guardOptions, noBackupFlag, restoreJobsFlag, type Task } from './task.ts';

export const task: Task<{ backup?: string; jobs?: number; opts: DestroyOptions }> = {
  name: 'db:restore',
  summary: 'Replace the database with a backup (default: the newest verified); a safety backup is taken first.',
  usage: '[BACKUP]',
  destructive: true,
  flags: {
    ...noBackupFlag,
    ...forceProductionFlag,
    ...restoreJobsFlag,
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  options: ({ positionals, flags }) => ({
    backup: positionals[0],
    jobs: parseJobs(flags.jobs as string | undefined),
    opts: guardOptions(flags),
  }),
  async run(ctx, { backup, jobs, opts }) {
    const b = await resolveBackup(ctx, backup, { verifiedOnly: true });
    restoreJobs(b.manifest, jobs); // --jobs on a custom-format backup is refused before anything is asked
    const checked = await checkIntegrity(ctx, b); // a damaged file is refused before anything is asked or changed
    const rt = await selectRuntime(ctx);
    // The guard, the safety backup and the restore all connect: put right what a killed restore left first.
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

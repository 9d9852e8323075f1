import { selectRuntime } from '@dbkit/core/runtime/select';
import { createBackup } from '@dbkit/core/backup/backup';
import { repairBeforeRestore, restoreBackup } from '@dbkit/core/backup/restore';
import { resolveBackup } from '@dbkit/core/backup/store';
import { checkIntegrity } from '@dbkit/core/backup/integrity';
import { jobsFlag, restoreJobs, restoreJobsFlag } from '@dbkit/core/backup/format';
import { forceProductionFlag, guardProduction, noBackupFlag, writeAudit } from '@dbkit/core/guard';
import { yesFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:restore',
  summary: 'Replace the database with a backup (default: the newest verified); a safety backup is taken first.',
  usage: '[BACKUP]',
  destructive: true,
  flags: { ...yesFlag, ...noBackupFlag, ...forceProductionFlag, ...restoreJobsFlag, json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx, { positionals, flags }) {
    const jobs = jobsFlag(flags.jobs as string | undefined);
    const b = await resolveBackup(ctx, positionals[0], { verifiedOnly: true });
    restoreJobs(b.manifest, jobs); // --jobs on a custom-format backup is refused before anything is asked
    const checked = await checkIntegrity(ctx, b); // a damaged file is refused before anything is asked or changed
    const rt = await selectRuntime(ctx);
    // A restore killed earlier may have left the database refusing connections or renamed away:
    // put that right first, since the guard, the safety backup and the restore all connect to it.
    await repairBeforeRestore(ctx, rt);
    const audit = await guardProduction(ctx, rt, 'db:restore', flags, b.manifest.name, `Replace database ${b.manifest.database} with the backup ${b.manifest.name}?`);
    if (!flags['no-backup']) ctx.log.info(`safety backup: ${(await createBackup(ctx, rt, { reason: 'before db:restore' })).manifest.name}`);
    const r = await restoreBackup(ctx, rt, checked, { jobs });
    if (audit) await writeAudit(ctx, rt, audit, false); // the restored database gets the line too
    ctx.log.result(`restored ${b.manifest.name} as ${r.database} in ${r.ms} ms${r.rolesCreated ? ` (${r.rolesCreated} role(s) created)` : ''}`, { name: b.manifest.name, ...r });
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { verifyBackup } from '@dbkit/core/backup/backup';
import { resolveBackup } from '@dbkit/core/backup/store';
import { parseJobs, restoreJobs } from '@dbkit/core/backup/format';
import { restoreJobsFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:backup:verify',
  summary: 'Restore a backup (default: the newest) into a scratch database and compare it with what was dumped.',
  usage: '[BACKUP]',
  flags: { ...restoreJobsFlag, json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx, { positionals, flags }) {
    const jobs = parseJobs(flags.jobs as string | undefined);
    const b = await resolveBackup(ctx, positionals[0], { verifiedOnly: false });
    restoreJobs(b.manifest, jobs); // --jobs on a custom-format backup is refused before the server is touched
    const rt = await selectRuntime(ctx);
    const r = await verifyBackup(ctx, rt, b, { jobs });
    ctx.log.result(`verified ${b.manifest.name}: ${r.tables} tables, ${r.rows} rows, schema identical`, { name: b.manifest.name, ...r });
  },
};

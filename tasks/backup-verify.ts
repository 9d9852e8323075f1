import { selectRuntime } from '@dbkit/core/runtime/select';
import { verifyBackup } from '@dbkit/core/backup/backup';
import { resolveBackup } from '@dbkit/core/backup/store';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:backup:verify',
  summary: 'Restore a backup (default: the newest) into a scratch database and compare it with what was dumped.',
  usage: '[BACKUP]',
  flags: { json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx, { positionals }) {
    const b = await resolveBackup(ctx, positionals[0], { verifiedOnly: false });
    const rt = await selectRuntime(ctx);
    const r = await verifyBackup(ctx, rt, b);
    ctx.log.result(`verified ${b.manifest.name}: ${r.tables} tables, ${r.rows} rows, schema identical`, { name: b.manifest.name, ...r });
  },
};

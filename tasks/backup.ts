import { selectRuntime } from '@dbkit/core/runtime/select';
import { createBackup, verifyBackup } from '@dbkit/core/backup/backup';
import { applyRetention, shown } from '@dbkit/core/backup/store';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:backup',
  summary: 'Back up the database (pg_dump -Fc) and the roles into DB_BACKUP_DIR, then apply DB_BACKUP_KEEP.',
  flags: {
    verify: { type: 'boolean', description: 'restore it into a scratch database and compare before calling it done' },
    'with-passwords': { type: 'boolean', description: 'keep the roles\' password verifiers in roles.sql' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  async run(ctx, { flags }) {
    const rt = await selectRuntime(ctx);
    const b = await createBackup(ctx, rt, { withPasswords: Boolean(flags['with-passwords']) });
    const rel = shown(ctx, b.dir);
    ctx.log.info(`backup written: ${rel} (${(b.manifest.dump.bytes / 1e6).toFixed(1)} MB in ${b.manifest.ms} ms)`);
    const verified = flags.verify ? await verifyBackup(ctx, rt, b) : undefined;
    if (verified) ctx.log.info(`verified: ${verified.tables} tables, ${verified.rows} rows restored and compared in ${verified.ms} ms`);
    // Old backups go only once the new one exists (and, with --verify, restored).
    const removed = await applyRetention(ctx);
    if (removed.length) ctx.log.info(`retention (DB_BACKUP_KEEP): removed ${removed.join(', ')}`);
    ctx.log.result(rel, { backup: b.dir, name: b.manifest.name, bytes: b.manifest.dump.bytes, ms: b.manifest.ms, verified: Boolean(verified), removed });
  },
};

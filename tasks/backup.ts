import { selectRuntime } from '@dbkit/core/runtime/select';
import { createBackup, verifyBackup } from '@dbkit/core/backup/backup';
import { applyRetention, shown } from '@dbkit/core/backup/store';
import { chosenFormat } from '@dbkit/core/backup/format';
import { applyPhysicalRetention, createPhysicalBackup } from '@dbkit/core/backup/physical';
import { UsageError } from '@dbkit/core/errors';
import { physicalFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:backup',
  summary:
    'Back up the database (pg_dump -Fc, or -Fd with --format dir) and the roles, or the whole cluster (--physical: pg_basebackup), into DB_BACKUP_DIR, then apply DB_BACKUP_KEEP.',
  flags: {
    format: {
      type: 'string',
      description: 'custom (one file; the default, or DB_BACKUP_FORMAT) or dir (a file per table, dumped in parallel)',
    },
    jobs: { type: 'string', description: 'with --format dir: pg_dump processes (default DB_BACKUP_JOBS, else the CPUs up to 4)' },
    verify: { type: 'boolean', description: 'restore it into a scratch database and compare before calling it done' },
    'with-passwords': { type: 'boolean', description: "keep the roles' password verifiers in roles.sql" },
    ...physicalFlag,
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  async run(ctx, { flags }) {
    if (flags.physical) {
      const other = ['format', 'jobs', 'verify', 'with-passwords'].filter((f) => flags[f] !== undefined);
      if (other.length)
        throw new UsageError(
          `--physical takes no --${other[0]}: a base backup copies the whole cluster's files`,
          'drop it, or take a logical backup without --physical',
        );
      const rt = await selectRuntime(ctx);
      const b = await createPhysicalBackup(ctx, rt);
      const rel = shown(ctx, b.dir);
      const bytes = b.manifest.files.reduce((n, f) => n + f.bytes, 0);
      ctx.log.info(`base backup written: ${rel} (${(bytes / 1e6).toFixed(1)} MB in ${b.manifest.ms} ms, WAL from ${b.manifest.startLsn})`);
      const { removed, segments } = await applyPhysicalRetention(ctx, rt);
      if (removed.length || segments)
        ctx.log.info(
          `retention (DB_BACKUP_KEEP): removed ${[...removed, ...(segments ? [`${segments} archived WAL file(s)`] : [])].join(', ')}`,
        );
      ctx.log.result(rel, {
        backup: b.dir,
        name: b.manifest.name,
        format: 'physical',
        bytes,
        startLsn: b.manifest.startLsn,
        endLsn: b.manifest.endLsn,
        timeline: b.manifest.timeline,
        ms: b.manifest.ms,
        removed,
        removedWal: segments,
      });
      return;
    }
    // Bad flags stop the task before anything is touched.
    const format = chosenFormat(ctx.cfg, flags.format as string | undefined, flags.jobs as string | undefined);
    const rt = await selectRuntime(ctx);
    const b = await createBackup(ctx, rt, { withPasswords: Boolean(flags['with-passwords']), format });
    const rel = shown(ctx, b.dir);
    const how = format.kind === 'dir' ? `dir format, ${format.jobs} job(s), ` : '';
    ctx.log.info(`backup written: ${rel} (${how}${(b.manifest.dump.bytes / 1e6).toFixed(1)} MB in ${b.manifest.ms} ms)`);
    const verified = flags.verify ? await verifyBackup(ctx, rt, b) : undefined;
    if (verified) ctx.log.info(`verified: ${verified.tables} tables, ${verified.rows} rows restored and compared in ${verified.ms} ms`);
    // Old backups go only once the new one exists (and, with --verify, restored).
    const removed = await applyRetention(ctx);
    if (removed.length) ctx.log.info(`retention (DB_BACKUP_KEEP): removed ${removed.join(', ')}`);
    ctx.log.result(rel, {
      backup: b.dir,
      name: b.manifest.name,
      format: format.kind,
      jobs: format.jobs,
      bytes: b.manifest.dump.bytes,
      ms: b.manifest.ms,
      verified: Boolean(verified),
      removed,
    });
  },
};

import type { Ctx } from '../context.ts';
import type { Admin } from '../provision.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { age } from '../overview.ts';
import { literal } from '../pg.ts';
import { ARMED_FILE, archivedSegments } from './wal.ts';

// Whether the running server's WAL archiving works, for db:doctor: pg_stat_archiver (the server's own
// count of what archive_command did), the segments waiting in pg_wal (archive_status/*.ready), and the
// archive itself (its newest segment).

/** One row: armed, archive_mode, the statistics (times in ms since the epoch, '' when never), the waiting segments. */
export const ARCHIVER_SQL = `SELECT (pg_stat_file(${literal(ARMED_FILE)}, true)).size IS NOT NULL, current_setting('archive_mode'),
  archived_count::text, coalesce(last_archived_wal, ''), coalesce((extract(epoch FROM last_archived_time) * 1000)::bigint::text, ''),
  failed_count::text, coalesce(last_failed_wal, ''), coalesce((extract(epoch FROM last_failed_time) * 1000)::bigint::text, ''),
  (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')::text
  FROM pg_stat_archiver`;

export interface ArchivingHealth {
  status: 'ok' | 'warn' | 'fail';
  detail: string;
  fix?: string;
}

/** db:doctor's "WAL archiving" check. */
export async function archivingHealth(ctx: Pick<Ctx, 'clock'>, rt: Runtime, admin: Admin): Promise<ArchivingHealth> {
  if (!rt.pitr) return { status: 'ok', detail: `point-in-time recovery is not available on this target (${rt.label})` };
  const { archive } = rt.pitr;
  const [[armedRaw, mode, archivedCount, lastWal, lastMs, failedCount, failedWal, failedMs, readyRaw]] = await admin.query(ARCHIVER_SQL);
  const armed = armedRaw === 'true' || armedRaw === 't';
  const ready = Number(readyRaw);
  const now = ctx.clock();
  const ago = (ms: string) => age(new Date(Number(ms)).toISOString(), now);
  const where = await archive.where();
  if (mode === 'off')
    return {
      status: 'warn',
      detail: 'archive_mode is off (the server was started before archiving was set up): no WAL is archived',
      fix: 'restart it: pnpm db:down && pnpm db:up',
    };
  // Failing: the last attempt failed after the last success. The server keeps the segment and retries.
  if (Number(failedCount) > 0 && failedMs && (!lastMs || Number(failedMs) > Number(lastMs))) {
    return {
      status: 'fail',
      detail:
        `archiving fails: ${failedWal} failed ${ago(failedMs)} ago (${failedCount} failed attempt(s)` +
        `${lastWal ? `; the last success was ${lastWal}, ${ago(lastMs)} ago` : ', none succeeded'}); ` +
        `the server keeps every segment until it succeeds: ${ready} wait in pg_wal, which grows`,
      fix: `read wal-archive's line in the server log (pnpm db:logs): is ${where} there, mounted and writable?`,
    };
  }
  const segments = archivedSegments(await archive.files(), 1);
  const newest = segments.reduce<(typeof segments)[number] | undefined>(
    (a, s) => (!a || s.archivedAt.getTime() > a.archivedAt.getTime() ? s : a),
    undefined,
  );
  if (!armed) {
    if (newest)
      return {
        status: 'warn',
        detail: `${where} holds segments, but this cluster is not marked armed (${ARMED_FILE}): a missing archive folder would be skipped silently`,
        fix: 'arm it with a base backup: pnpm db:backup --physical',
      };
    return { status: 'ok', detail: 'not armed yet: no base backup, so segments are recycled (pnpm db:backup --physical arms it)' };
  }
  const waiting = ready ? `; ${ready} segment(s) wait in pg_wal` : '';
  if (!newest) return { status: 'ok', detail: `armed, into ${where}; no segment archived yet (${archivedCount} archived)${waiting}` };
  return {
    status: 'ok',
    detail: `armed, into ${where}; newest archived segment ${newest.name}, ${age(newest.archivedAt.toISOString(), now)} old${waiting}`,
  };
}

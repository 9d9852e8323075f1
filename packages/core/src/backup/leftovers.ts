// What killed runs leave, named with their pid so a later run can prove them stale and remove them.
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { ident } from '../pg.ts';
import { PARTIAL_PREFIX, REMOVING_PREFIX, shown } from './store.ts';

/** Whether a process runs (another user's counts: EPERM). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function scratchDatabase(kind: 'verify' | 'restore'): string {
  return `pgdeploy_${kind}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

export function leftoverPid(name: string): number | undefined {
  const m =
    new RegExp(`^${PARTIAL_PREFIX.replace('.', '\\.')}\\d{8}T\\d{6}Z-(\\d+)-[0-9a-f]+$`).exec(name) ?? // createBackup's directory
    /^\.restore-(\d+)-[0-9a-f]+\.tar$/.exec(name) ?? // docker: a dir-format backup on its way into api-db
    /\.(\d+)\.tmp$/.exec(name) ?? // writeAtomic
    /^pgdeploy_(?:verify|restore)_(\d+)_[0-9a-f]+$/.exec(name); // scratchDatabase
  return m ? Number(m[1]) : undefined;
}

export interface Leftover {
  name: string; // an absolute file or a database
  kind: 'file' | 'database';
  stale: boolean;
  why: string;
  fix: string; // the command that removes it
}

/** Leftover files in DB_BACKUP_DIR: stale when their pid no longer runs; a `.removing-*` always is. */
export async function fileLeftovers(ctx: Pick<Ctx, 'fs' | 'cfg'>): Promise<Leftover[]> {
  const dir = ctx.cfg.backupDir;
  const out: Leftover[] = [];
  const add = (file: string, what: string) => {
    const pid = leftoverPid(path.basename(file));
    const rel = shown(ctx, file);
    const removing = path.basename(file).startsWith(REMOVING_PREFIX);
    const stale = removing || (pid !== undefined && pid !== process.pid && !pidAlive(pid));
    out.push({
      name: file,
      kind: 'file',
      stale,
      why: stale
        ? `${rel}: ${what}${removing ? '' : ` (pid ${pid}, no longer running)`}`
        : `${rel}: ${what}, by pid ${pid ?? '?'}, which still runs`,
      fix: stale ? `the next pnpm db:backup removes it, or: rm -rf ${rel}` : `once pid ${pid ?? '?'} has ended: rm -rf ${rel}`,
    });
  };
  // Best effort, for reports: an unreadable folder is db:backup's and listBackups' error.
  for (const e of await ctx.fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.name.startsWith(PARTIAL_PREFIX)) add(p, 'a backup that never finished');
    else if (e.name.startsWith(REMOVING_PREFIX)) add(p, 'a backup whose deletion never finished');
    else if (/^\.restore-\d+-[0-9a-f]+\.tar$/.test(e.name)) add(p, 'a dump that was being sent into the container');
    else if (e.isDirectory() && !e.name.startsWith('.')) {
      for (const f of await ctx.fs.readdir(p).catch(() => [] as string[])) {
        // best effort, as above
        if (/\.\d+\.tmp$/.test(f)) add(path.join(p, f), 'a manifest that was being rewritten');
      }
    }
  }
  return out;
}

export async function removeStaleFiles(ctx: Pick<Ctx, 'fs' | 'cfg' | 'log'>): Promise<number> {
  let n = 0;
  for (const l of await fileLeftovers(ctx)) {
    if (!l.stale) continue;
    await ctx.fs.rm(l.name, { recursive: true, force: true });
    ctx.log.info(`removed ${l.why}`);
    n++;
  }
  return n;
}

/** The scratch databases on a server, as rows of [name, sessions, comment]; any role may read both catalogs. */
export const SCRATCH_SQL = `SELECT d.datname, (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid), coalesce(shobj_description(d.oid, 'pg_database'), '')
  FROM pg_database d WHERE d.datname ~ '^pgdeploy_(verify|restore|replaced)_' ORDER BY d.datname`;

/** Stale: pid gone, no session, no comment (db:restore's mark of a copy it may need); anything else is only reported. */
export function databaseLeftovers(rows: readonly (readonly unknown[])[]): Leftover[] {
  return rows.map(([nameRaw, sessionsRaw, commentRaw]) => {
    const name = String(nameRaw);
    const sessions = Number(sessionsRaw);
    const pid = leftoverPid(name);
    const what = name.startsWith('pgdeploy_verify_')
      ? 'the scratch database of a verification'
      : name.startsWith('pgdeploy_restore_')
        ? 'the incoming database of a db:restore'
        : 'the database a db:restore replaced';
    const drop = `DROP DATABASE ${ident(name)}`;
    if (pid !== undefined && pid !== process.pid && !pidAlive(pid) && sessions === 0 && !commentRaw) {
      return {
        name,
        kind: 'database',
        stale: true,
        why: `database ${name}: ${what} (pid ${pid}, no longer running)`,
        fix: `the next pnpm db:backup or db:backup:verify removes it`,
      };
    }
    if (name.startsWith('pgdeploy_replaced_')) {
      return {
        name,
        kind: 'database',
        stale: false,
        why: `database ${name}: ${what}, with the data from before it; never removed automatically`,
        fix: `once you no longer need that data, as the superuser: ${drop}`,
      };
    }
    const because =
      sessions > 0
        ? `${sessions} session(s) use it`
        : pid === undefined
          ? 'it records no pid, so it cannot be proven stale'
          : pidAlive(pid)
            ? `pid ${pid} still runs`
            : 'db:restore marked it as a copy it may need';
    return {
      name,
      kind: 'database',
      stale: false,
      why: `database ${name}: ${what}; not removed: ${because}`,
      fix: `when no backup, verification or restore runs, as the superuser: ${drop}`,
    };
  });
}

import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { retained } from './retention.ts';

/**
 * One backup is one directory in DB_BACKUP_DIR, named `<database>-<UTC time>-v<migration version>`:
 *   db.dump          pg_dump custom format (-Fc), or, with --format dir:
 *   db.dir/          pg_dump directory format (-Fd): toc.dat and one data file per table
 *   db.dump.sha256   the dump's checksum, or db.dir.sha256 one line per file of db.dir, in
 *                    sha256sum's format with paths relative to the backup (`sha256sum -c` checks it)
 *   roles.sql        pg_dumpall --roles-only (no passwords unless --with-passwords)
 *   manifest.json    what the source held when dumped, and whether a restore was verified
 * It is built under a hidden temporary name and renamed whole once complete, so a directory with a
 * manifest is a finished backup and anything else is not one.
 */
export const DUMP = 'db.dump';
export const DUMP_DIR = 'db.dir';
export const ROLES = 'roles.sql';
export const MANIFEST = 'manifest.json';
export const SUM = `${DUMP}.sha256`;
export const DIR_SUM = `${DUMP_DIR}.sha256`;
export const PARTIAL_PREFIX = '.partial-';
/** What retention renames a backup to while it deletes it. */
export const REMOVING_PREFIX = '.removing-';

export interface FileSum {
  file: string;
  bytes: number;
  sha256: string;
}

/** A custom-format dump, one file. Manifests written before dir format existed have no `kind`. */
export interface CustomDump extends FileSum {
  kind?: 'custom';
}

/** A directory-format dump: `file` is db.dir, `bytes` its total, `files` each file in it (paths relative to the backup). */
export interface DirDump {
  kind: 'dir';
  file: string;
  bytes: number;
  /** The pg_dump processes that wrote it; a restore uses as many unless told otherwise. */
  jobs: number;
  files: FileSum[];
}

export interface Manifest {
  format: 1;
  name: string;
  database: string;
  createdAt: string;
  /** Why it was taken, when not by db:backup: `before db:delete`. */
  reason?: string;
  runtime: string;
  serverVersion: string;
  migration: { version: number | null; dirty: boolean };
  dump: CustomDump | DirDump;
  roles: FileSum & { passwords: boolean };
  /** `table <name>` to its row count and `sequence <name>` to its last value, in the dump's snapshot. */
  data: Record<string, string>;
  /** The schema as SCHEMA_SQL lists it, in the dump's snapshot. */
  schema: string[];
  ms: number;
  verified?: { at: string; tables: number; rows: number };
}

export interface Backup {
  dir: string;
  manifest: Manifest;
}

/** A path as people read it: relative inside the project, absolute outside it. */
export function shown(ctx: Pick<Ctx, 'cfg'>, p: string): string {
  const rel = path.relative(ctx.cfg.root, p);
  return rel && !rel.startsWith('..') ? rel : p;
}

/** `20250131T235959Z`: sorts as time does and is safe in a file name. */
export function stamp(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
}

export function backupName(database: string, at: Date, version: number | null, reason?: string): string {
  const tail = reason ? `-${reason.replace(/^before db:/, 'before-').replace(/[^A-Za-z0-9]+/g, '-')}` : '';
  return `${database}-${stamp(at)}-${version === null ? 'unmigrated' : `v${version}`}${tail}`;
}

/** SHA-256 and size of a file, read as a stream; with `sync`, flushed to disk first. */
export async function sumFile(ctx: Pick<Ctx, 'fs'>, file: string, sync = false): Promise<FileSum> {
  const fh = await ctx.fs.open(file, 'r');
  try {
    if (sync) await fh.sync();
    const h = createHash('sha256');
    let bytes = 0;
    for await (const chunk of fh.createReadStream({ autoClose: false })) {
      h.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    return { file: path.basename(file), bytes, sha256: h.digest('hex') };
  } finally {
    await fh.close();
  }
}

/** Runs `fn` on every item, at most `limit` at a time; the results in the items' order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * The files of a backup's db.dir, relative to the backup, sorted. pg_dump writes only regular files
 * there: anything else (a link, a folder) is refused, so nothing is ever read through one.
 */
export async function dumpDirFiles(ctx: Pick<Ctx, 'fs'>, backupDir: string): Promise<string[]> {
  const entries = await ctx.fs.readdir(path.join(backupDir, DUMP_DIR), { withFileTypes: true });
  const odd = entries.find((e) => !e.isFile());
  if (odd) throw new UserError(`${DUMP_DIR}/${odd.name} is not a regular file`, 'a directory-format dump holds only files; do not restore this backup');
  return entries.map((e) => `${DUMP_DIR}/${e.name}`).sort();
}

/** SHA-256 and size of several files of a backup (paths relative to it), four at a time; with `sync`, each flushed first. */
export async function sumFiles(ctx: Pick<Ctx, 'fs'>, backupDir: string, files: readonly string[], sync = false): Promise<FileSum[]> {
  return mapLimit(files, 4, async (f) => ({ ...(await sumFile(ctx, path.join(backupDir, f), sync)), file: f }));
}

/** Checksums as sha256sum prints them, so `sha256sum -c` reads the file. */
export const sumLines = (sums: readonly FileSum[]): string => sums.map((f) => `${f.sha256}  ${f.file}\n`).join('');

/** A sha256sum file as path to checksum. */
export function parseSumLines(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (m) out.set(m[2], m[1]);
  }
  return out;
}

/** Writes a small file so it is never seen half-written: a temporary name, flushed, renamed. */
export async function writeAtomic(ctx: Pick<Ctx, 'fs'>, file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await ctx.fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await ctx.fs.rename(tmp, file);
}

export async function readManifest(ctx: Pick<Ctx, 'fs'>, dir: string): Promise<Manifest | undefined> {
  const text = await ctx.fs.readFile(path.join(dir, MANIFEST), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const m = JSON.parse(text) as Manifest;
    return m.format === 1 && typeof m.createdAt === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Finished backups, newest first. */
export async function listBackups(ctx: Pick<Ctx, 'fs' | 'cfg'>): Promise<Backup[]> {
  const dir = ctx.cfg.backupDir;
  const entries = await ctx.fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  const out: Backup[] = [];
  for (const e of entries) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    const manifest = await readManifest(ctx, path.join(dir, e.name));
    if (manifest) out.push({ dir: path.join(dir, e.name), manifest });
  }
  return out.sort((a, b) => Date.parse(b.manifest.createdAt) - Date.parse(a.manifest.createdAt) || b.manifest.name.localeCompare(a.manifest.name));
}

/**
 * A backup named on the command line: a directory, a file in it, or a name in DB_BACKUP_DIR.
 * Without one, the newest verified backup.
 */
export async function resolveBackup(ctx: Pick<Ctx, 'fs' | 'cfg'>, arg: string | undefined, opts: { verifiedOnly: boolean }): Promise<Backup> {
  const rel = shown(ctx, ctx.cfg.backupDir);
  if (arg === undefined) {
    const all = await listBackups(ctx);
    const pick = opts.verifiedOnly ? all.find((b) => b.manifest.verified) : all[0];
    if (!pick) {
      throw new UserError(
        all.length ? `no verified backup in ${rel}` : `no backup in ${rel}`,
        all.length ? `verify one (pnpm db:backup:verify ${all[0].manifest.name}), or name the one to use` : 'take one: pnpm db:backup --verify',
      );
    }
    return pick;
  }
  const candidates = arg.includes('/') ? [path.resolve(ctx.cfg.root, arg)] : [path.join(ctx.cfg.backupDir, arg), path.resolve(ctx.cfg.root, arg)];
  for (const c of candidates) {
    const st = await ctx.fs.stat(c).catch(() => undefined);
    if (!st) continue;
    const dir = st.isDirectory() ? c : path.dirname(c);
    const manifest = await readManifest(ctx, dir);
    if (manifest) return { dir, manifest };
    throw new UserError(`${arg} is not a finished backup (no readable ${MANIFEST} in ${dir})`, `pick one of the backups in ${rel}: ls ${rel}`);
  }
  throw new UserError(`no backup named ${arg}`, `pick one of the backups in ${rel}: ls ${rel}`);
}

/**
 * A backup whose files checkIntegrity has read and found whole: what db:restore takes, so the
 * dump is hashed once (before the question) and never restored unchecked.
 */
export type CheckedBackup = Backup & { readonly checked: true };

/**
 * Checks a backup's files against its manifest and its checksum file; a single flipped byte, a
 * missing file, or (in db.dir) a file the dump did not write fails it. Says which file and what to
 * do instead.
 */
export async function checkIntegrity(ctx: Pick<Ctx, 'fs'>, b: Backup): Promise<CheckedBackup> {
  const m = b.manifest;
  const damaged = (what: string) => new UserError(`backup ${m.name} is damaged: ${what}`, 'do not restore it; use another backup (pnpm db:restore NAME) and check the disk it is on');
  const dumpFiles = m.dump.kind === 'dir' ? (m.dump.files ?? []) : [m.dump];
  if (m.dump.kind === 'dir') {
    const present = await dumpDirFiles(ctx, b.dir).catch((e) => {
      throw damaged((e as NodeJS.ErrnoException).code === 'ENOENT' ? `${DUMP_DIR} is missing` : (e as Error).message);
    });
    const missing = dumpFiles.find((f) => !present.includes(f.file));
    if (missing) throw damaged(`${missing.file} is missing`);
    const extra = present.find((f) => !dumpFiles.some((d) => d.file === f));
    if (extra) throw damaged(`${extra} is not part of the dump`);
  }
  const sumName = m.dump.kind === 'dir' ? DIR_SUM : SUM;
  const listed = parseSumLines(await ctx.fs.readFile(path.join(b.dir, sumName), 'utf8').catch(() => ''));
  if (listed.size !== dumpFiles.length || dumpFiles.some((f) => listed.get(f.file) !== f.sha256)) throw damaged(`${sumName} is missing or does not match the manifest`);
  const files = [...dumpFiles, m.roles];
  const actual = await mapLimit(files, 4, (f) => sumFile(ctx, path.join(b.dir, f.file)).catch(() => undefined));
  files.forEach((f, i) => {
    const a = actual[i];
    if (!a || a.sha256 !== f.sha256 || a.bytes !== f.bytes) throw damaged(`${f.file} ${a ? 'does not match its checksum' : 'is missing'}`);
  });
  return { ...b, checked: true };
}

/** Marks a backup verified, rewriting its manifest atomically. */
export async function markVerified(ctx: Pick<Ctx, 'fs'>, b: Backup, verified: NonNullable<Manifest['verified']>): Promise<void> {
  b.manifest.verified = verified;
  await writeAtomic(ctx, path.join(b.dir, MANIFEST), JSON.stringify(b.manifest, null, 2) + '\n');
}

/**
 * Removes finished backups that DB_BACKUP_KEEP no longer asks for; never the newest verified one,
 * never a directory that is not a finished backup. Called only after a new backup succeeded.
 */
export async function applyRetention(ctx: Pick<Ctx, 'fs' | 'cfg'>): Promise<string[]> {
  const all = await listBackups(ctx);
  const keep = retained(all.map((b) => ({ b, name: b.manifest.name, createdAt: new Date(b.manifest.createdAt), verified: Boolean(b.manifest.verified) })), ctx.cfg.backupKeep);
  const kept = new Set([...keep].map((k) => k.b));
  const removed: string[] = [];
  for (const b of all) {
    if (kept.has(b)) continue;
    // Renamed out of sight first: an interrupted removal must not leave a manifest without its dump.
    const gone = path.join(path.dirname(b.dir), `${REMOVING_PREFIX}${path.basename(b.dir)}`);
    await ctx.fs.rename(b.dir, gone);
    await ctx.fs.rm(gone, { recursive: true, force: true });
    removed.push(b.manifest.name);
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------
// Leftovers. A backup, verification or restore that is killed leaves what it was building: a
// hidden directory or file in DB_BACKUP_DIR, or a scratch database on the server. Each is named
// with the pid of the process that made it, so a later run can prove it stale (that process no
// longer runs) and remove it; whatever cannot be proven stale is only reported (db:status,
// db:doctor), with the command that removes it.

/** Whether a process runs (another user's counts: EPERM). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A new scratch database's name: `pgdeploy_<kind>_<pid>_<random>`, where the pid is this process's:
 * verification restores into one, db:restore into another before it takes the application's name.
 */
export function scratchDatabase(kind: 'verify' | 'restore'): string {
  return `pgdeploy_${kind}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

/** The pid a leftover's name records, if it records one. */
export function leftoverPid(name: string): number | undefined {
  const m =
    new RegExp(`^${PARTIAL_PREFIX.replace('.', '\\.')}\\d{8}T\\d{6}Z-(\\d+)-[0-9a-f]+$`).exec(name) ?? // createBackup's directory
    /^\.restore-(\d+)-[0-9a-f]+\.tar$/.exec(name) ?? // docker: a dir-format backup on its way into api-db
    /\.(\d+)\.tmp$/.exec(name) ?? // writeAtomic
    /^pgdeploy_(?:verify|restore)_(\d+)_[0-9a-f]+$/.exec(name); // scratchDatabase
  return m ? Number(m[1]) : undefined;
}

export interface Leftover {
  /** The file (absolute) or the database name. */
  name: string;
  kind: 'file' | 'database';
  /** Proven stale: a later run removes it. */
  stale: boolean;
  /** One line: what it is and why it is (or is not) removed. */
  why: string;
  /** The command that removes it. */
  fix: string;
}

/**
 * What interrupted runs left in DB_BACKUP_DIR: hidden directories and files of backups being built
 * (`.partial-*`), deleted (`.removing-*`) or sent into a container (`.restore-*.tar`), and a
 * manifest's temporary file inside a finished backup. Stale when the pid in the name no longer runs;
 * a `.removing-*` is always stale (retention had already decided it goes).
 */
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
  for (const e of await ctx.fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.name.startsWith(PARTIAL_PREFIX)) add(p, 'a backup that never finished');
    else if (e.name.startsWith(REMOVING_PREFIX)) add(p, 'a backup whose deletion never finished');
    else if (/^\.restore-\d+-[0-9a-f]+\.tar$/.test(e.name)) add(p, 'a dump that was being sent into the container');
    else if (e.isDirectory() && !e.name.startsWith('.')) {
      for (const f of await ctx.fs.readdir(p).catch(() => [] as string[])) {
        if (/\.\d+\.tmp$/.test(f)) add(path.join(p, f), 'a manifest that was being rewritten');
      }
    }
  }
  return out;
}

/** Removes the stale file leftovers; says what it removed, one line each. */
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

/**
 * The scratch databases on a server, from `pg_database` with the sessions on each and its comment:
 * rows of [name, sessions, comment]. Any role may read both catalogs; ending or dropping needs the superuser.
 */
export const SCRATCH_SQL = `SELECT d.datname, (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid), coalesce(shobj_description(d.oid, 'pg_database'), '')
  FROM pg_database d WHERE d.datname ~ '^pgdeploy_(verify|restore|replaced)_' ORDER BY d.datname`;

const sqlIdent = (s: string) => `"${s.replace(/"/g, '""')}"`;

/**
 * The scratch databases that interrupted runs left. A verification's or a restore's database is
 * stale when the pid in its name no longer runs, nobody is connected to it and it carries no comment
 * (db:restore marks a finished copy it may still need to put back). Anything else is only reported:
 * the database an interrupted db:restore replaced, and databases named without a pid (before pids
 * were recorded, or by a process of another version).
 */
export function databaseLeftovers(rows: readonly (readonly unknown[])[]): Leftover[] {
  return rows.map(([nameRaw, sessionsRaw, commentRaw]) => {
    const name = String(nameRaw);
    const sessions = Number(sessionsRaw);
    const pid = leftoverPid(name);
    const what = name.startsWith('pgdeploy_verify_') ? 'the scratch database of a verification' : name.startsWith('pgdeploy_restore_') ? 'the incoming database of a db:restore' : 'the database a db:restore replaced';
    const drop = `DROP DATABASE ${sqlIdent(name)}`;
    if (pid !== undefined && pid !== process.pid && !pidAlive(pid) && sessions === 0 && !commentRaw) {
      return { name, kind: 'database', stale: true, why: `database ${name}: ${what} (pid ${pid}, no longer running)`, fix: `the next pnpm db:backup or db:backup:verify removes it` };
    }
    if (name.startsWith('pgdeploy_replaced_')) {
      return { name, kind: 'database', stale: false, why: `database ${name}: ${what}, with the data from before it; never removed automatically`, fix: `once you no longer need that data, as the superuser: ${drop}` };
    }
    const because = sessions > 0 ? `${sessions} session(s) use it` : pid === undefined ? 'it records no pid, so it cannot be proven stale' : pidAlive(pid) ? `pid ${pid} still runs` : 'db:restore marked it as a copy it may need';
    return { name, kind: 'database', stale: false, why: `database ${name}: ${what}; not removed: ${because}`, fix: `when no backup, verification or restore runs, as the superuser: ${drop}` };
  });
}

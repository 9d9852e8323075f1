import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { retained } from './retention.ts';

// One backup is one directory in DB_BACKUP_DIR, built under a hidden name and renamed whole once
// complete: a directory with a manifest is a finished backup, anything else is not one.
export const DUMP = 'db.dump';
export const DUMP_DIR = 'db.dir';
export const ROLES = 'roles.sql';
export const MANIFEST = 'manifest.json';
export const SUM = `${DUMP}.sha256`;
export const DIR_SUM = `${DUMP_DIR}.sha256`;
export const PARTIAL_PREFIX = '.partial-';
export const REMOVING_PREFIX = '.removing-'; // retention's, while it deletes

export interface FileSum {
  file: string;
  bytes: number;
  sha256: string;
}

/** Manifests older than dir format have no `kind`. */
export interface CustomDump extends FileSum {
  kind?: 'custom';
}

export interface DirDump {
  kind: 'dir';
  file: string;
  bytes: number;
  jobs: number; // pg_dump's, and a restore's default
  files: FileSum[];
}

export interface Manifest {
  format: 1;
  name: string;
  database: string;
  createdAt: string;
  reason?: string;
  runtime: string;
  serverVersion: string;
  migration: { version: number | null; dirty: boolean };
  dump: CustomDump | DirDump;
  roles: FileSum & { passwords: boolean };
  data: Record<string, string>; // DATA_SQL in the dump's snapshot
  schema: string[]; // SCHEMA_SQL in the dump's snapshot
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
  return d
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
}

export function backupName(database: string, at: Date, version: number | null, reason?: string): string {
  const tail = reason ? `-${reason.replace(/^before db:/, 'before-').replace(/[^A-Za-z0-9]+/g, '-')}` : '';
  return `${database}-${stamp(at)}-${version === null ? 'unmigrated' : `v${version}`}${tail}`;
}

/** Writes a small file through a flushed temporary name, so it is never seen half-written. */
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

/** `fallback` where the path does not exist; any other failure (EACCES, EIO) is thrown. */
export function ifMissing<T, F>(p: Promise<T>, fallback: F): Promise<T | F> {
  return p.catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return fallback;
    throw e;
  });
}

export async function readManifest(ctx: Pick<Ctx, 'fs'>, dir: string): Promise<Manifest | undefined> {
  const text = await ctx.fs.readFile(path.join(dir, MANIFEST), 'utf8').catch(() => undefined); // none readable: not a finished backup
  if (text === undefined) return undefined;
  try {
    const m = JSON.parse(text) as Manifest;
    return m.format === 1 && typeof m.createdAt === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

export async function listBackups(ctx: Pick<Ctx, 'fs' | 'cfg'>): Promise<Backup[]> {
  const dir = ctx.cfg.backupDir;
  const entries = await ifMissing(ctx.fs.readdir(dir, { withFileTypes: true }), []);
  const out: Backup[] = [];
  for (const e of entries) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    const manifest = await readManifest(ctx, path.join(dir, e.name));
    if (manifest) out.push({ dir: path.join(dir, e.name), manifest });
  }
  return out.sort(
    (a, b) => Date.parse(b.manifest.createdAt) - Date.parse(a.manifest.createdAt) || b.manifest.name.localeCompare(a.manifest.name),
  );
}

/** A directory, a file in it or a name in DB_BACKUP_DIR; without one, the newest verified backup. */
export async function resolveBackup(
  ctx: Pick<Ctx, 'fs' | 'cfg'>,
  arg: string | undefined,
  opts: { verifiedOnly: boolean },
): Promise<Backup> {
  const rel = shown(ctx, ctx.cfg.backupDir);
  if (arg === undefined) {
    const all = await listBackups(ctx);
    const pick = opts.verifiedOnly ? all.find((b) => b.manifest.verified) : all[0];
    if (!pick) {
      throw new UserError(
        all.length ? `no verified backup in ${rel}` : `no backup in ${rel}`,
        all.length
          ? `verify one (pnpm db:backup:verify ${all[0].manifest.name}), or name the one to use`
          : 'take one: pnpm db:backup --verify',
      );
    }
    return pick;
  }
  const candidates = arg.includes('/')
    ? [path.resolve(ctx.cfg.root, arg)]
    : [path.join(ctx.cfg.backupDir, arg), path.resolve(ctx.cfg.root, arg)];
  for (const c of candidates) {
    const st = await ifMissing(ctx.fs.stat(c), undefined);
    if (!st) continue;
    const dir = st.isDirectory() ? c : path.dirname(c);
    const manifest = await readManifest(ctx, dir);
    if (manifest) return { dir, manifest };
    throw new UserError(
      `${arg} is not a finished backup (no readable ${MANIFEST} in ${dir})`,
      `pick one of the backups in ${rel}: ls ${rel}`,
    );
  }
  throw new UserError(`no backup named ${arg}`, `pick one of the backups in ${rel}: ls ${rel}`);
}

export async function markVerified(ctx: Pick<Ctx, 'fs'>, b: Backup, verified: NonNullable<Manifest['verified']>): Promise<void> {
  b.manifest.verified = verified;
  await writeAtomic(ctx, path.join(b.dir, MANIFEST), JSON.stringify(b.manifest, null, 2) + '\n');
}

/**
 * Removes the backups of `all` (one kind, newest first) that DB_BACKUP_KEEP no longer asks for; says
 * which it removed and which it kept (in `all`'s order).
 */
export async function pruneBackups<B extends { dir: string; manifest: { name: string; createdAt: string; verified?: unknown } }>(
  ctx: Pick<Ctx, 'fs' | 'cfg'>,
  all: readonly B[],
): Promise<{ removed: string[]; kept: B[] }> {
  const keep = retained(
    all.map((b) => ({ b, name: b.manifest.name, createdAt: new Date(b.manifest.createdAt), verified: Boolean(b.manifest.verified) })),
    ctx.cfg.backupKeep,
  );
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
  return { removed, kept: all.filter((b) => kept.has(b)) };
}

/** Removes the backups DB_BACKUP_KEEP no longer asks for; called only after a new backup succeeded. */
export async function applyRetention(ctx: Pick<Ctx, 'fs' | 'cfg'>): Promise<string[]> {
  return (await pruneBackups(ctx, await listBackups(ctx))).removed;
}

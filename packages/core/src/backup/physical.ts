import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { readSecrets } from '../secrets.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { ensureBackupDir, syncDir } from './backup.ts';
import { sumFile } from './integrity.ts';
import { removeStaleFiles } from './leftovers.ts';
import { treeBytes, whileRunning } from './progress.ts';
import { ifMissing, MANIFEST, PARTIAL_PREFIX, pruneBackups, shown, stamp, writeAtomic, type FileSum } from './store.ts';
import { dumpHint, runTool } from './tool.ts';
import { parseLsn, prunable, segmentName, segmentOf } from './wal.ts';
import { pitrOf } from './pitr-runtime.ts';

import { BASE_TAR, PG_MANIFEST, WAL_TAR, type PhysicalBackup, type PhysicalManifest } from './physical-layout.ts';

async function readPhysical(ctx: Pick<Ctx, 'fs'>, dir: string): Promise<PhysicalManifest | undefined> {
  const text = await ctx.fs.readFile(path.join(dir, MANIFEST), 'utf8').catch(() => undefined); // not a finished backup
  if (text === undefined) return undefined;
  try {
    const m = JSON.parse(text) as PhysicalManifest;
    return m.kind === 'physical' && m.format === 2 ? m : undefined;
  } catch {
    return undefined;
  }
}

/** The finished physical backups, newest first. */
export async function listPhysical(ctx: Pick<Ctx, 'fs' | 'cfg'>): Promise<PhysicalBackup[]> {
  const out: PhysicalBackup[] = [];
  for (const e of await ifMissing(ctx.fs.readdir(ctx.cfg.backupDir, { withFileTypes: true }), [])) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    const manifest = await readPhysical(ctx, path.join(ctx.cfg.backupDir, e.name));
    if (manifest) out.push({ dir: path.join(ctx.cfg.backupDir, e.name), manifest });
  }
  return out.sort((a, b) => Date.parse(b.manifest.finishedAt) - Date.parse(a.manifest.finishedAt));
}

/** pg_basebackup's backup_manifest: the WAL range the backup needs, on which timeline. */
function walRange(text: string): { timeline: number; start: string; end: string } {
  const m = JSON.parse(text) as { 'WAL-Ranges'?: { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[] };
  const r = m['WAL-Ranges']?.[0];
  if (!r) throw new UserError('pg_basebackup wrote a backup_manifest without a WAL range', 'run again with --verbose');
  return { timeline: r.Timeline, start: r['Start-LSN'], end: r['End-LSN'] };
}

/**
 * pg_basebackup in tar format, its WAL streamed beside it, with a SHA-256 backup_manifest; the
 * archive is armed first, so every segment from the backup's start on is kept.
 */
export async function createPhysicalBackup(ctx: Ctx, rt: Runtime): Promise<PhysicalBackup> {
  const t0 = performance.now();
  const roles = await readSecrets(ctx);
  if (!(await rt.running())) throw new UserError('PostgreSQL is not running, so no backup can be taken', 'start it: pnpm db:up');
  const { archive } = pitrOf(rt);
  await ensureBackupDir(ctx);
  const admin = await rt.admin();
  const [settings] = await admin.query(
    `SELECT current_setting('archive_mode'), current_setting('archive_command'), current_setting('server_version'),
            (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')`,
  );
  await archive.check({ archive_mode: settings[0], archive_command: settings[1] });
  await rt.prepareTools();
  await removeStaleFiles(ctx);
  const where = await archive.arm();
  const at = ctx.clock();
  const tmp = path.join(ctx.cfg.backupDir, `${PARTIAL_PREFIX}${stamp(at)}-${process.pid}-${randomBytes(3).toString('hex')}`);
  try {
    ctx.log.step(`taking a base backup of the whole cluster (pg_basebackup, tar, WAL streamed) into ${shown(ctx, ctx.cfg.backupDir)}`);
    await whileRunning(
      ctx,
      'base backup',
      runTool(
        rt,
        'pg_basebackup',
        // The tool makes `tmp` (0700): natively with --pgdata, in a container as a tar unpacked here.
        ['--format=tar', '--wal-method=stream', '--checkpoint=fast', '--manifest-checksums=SHA256', '--label=pg-deploy', '--no-password'],
        { outDir: tmp },
        (r) => ({ message: `pg_basebackup failed (exit ${r.code})`, hint: dumpHint(r.stderr) }),
      ),
      () => treeBytes(ctx, tmp),
    );
    const finished = ctx.clock();
    const range = walRange(await ctx.fs.readFile(path.join(tmp, PG_MANIFEST), 'utf8'));
    const segmentBytes = Number(settings[3]);
    const files: FileSum[] = [];
    for (const f of [BASE_TAR, WAL_TAR, PG_MANIFEST]) {
      await ctx.fs.chmod(path.join(tmp, f), 0o600);
      files.push(await sumFile(ctx, path.join(tmp, f), true));
    }
    let name = `${roles.database}-${stamp(at)}-physical`;
    for (
      let i = 2;
      await ifMissing(
        ctx.fs.stat(path.join(ctx.cfg.backupDir, name)).then(() => true),
        false,
      );
      i++
    )
      name = `${roles.database}-${stamp(at)}-physical-${i}`;
    const manifest: PhysicalManifest = {
      format: 2,
      kind: 'physical',
      name,
      createdAt: at.toISOString(),
      finishedAt: finished.toISOString(),
      runtime: rt.label,
      serverVersion: settings[2],
      timeline: range.timeline,
      startLsn: range.start,
      endLsn: range.end,
      segmentBytes,
      startSegment: segmentName(range.timeline, segmentOf(parseLsn(range.start), segmentBytes), segmentBytes),
      files,
      ms: Math.round(performance.now() - t0),
    };
    await writeAtomic(ctx, path.join(tmp, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
    const dir = path.join(ctx.cfg.backupDir, name);
    await ctx.fs.rename(tmp, dir);
    await syncDir(ctx, ctx.cfg.backupDir);
    ctx.log.info(`WAL archive: ${where}`);
    return { dir, manifest };
  } catch (e) {
    await ctx.fs.rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Checks a physical backup's files against its manifest before anything is replaced. */
export async function checkPhysical(ctx: Pick<Ctx, 'fs' | 'cfg'>, b: PhysicalBackup): Promise<void> {
  for (const f of b.manifest.files) {
    const got = await sumFile(ctx, path.join(b.dir, f.file)).catch(() => undefined); // unreadable: damaged
    if (!got || got.sha256 !== f.sha256 || got.bytes !== f.bytes) {
      throw new UserError(
        `base backup ${b.manifest.name} is damaged: ${f.file} ${got ? 'does not match its checksum' : 'is missing or unreadable'}; nothing was changed`,
        'use another one (move this one out of the backups folder), or take a new one: pnpm db:backup --physical',
      );
    }
  }
}

/**
 * DB_BACKUP_KEEP for base backups (as for logical ones, counted on their own), then the WAL the
 * oldest kept one does not need: every segment before its start.
 */
export async function applyPhysicalRetention(ctx: Ctx, rt: Runtime): Promise<{ removed: string[]; segments: number }> {
  // Base backups are never verified: the newest ones of each period are kept.
  const { removed, kept } = await pruneBackups(ctx, await listPhysical(ctx));
  const oldest = kept[kept.length - 1];
  if (!oldest) return { removed, segments: 0 };
  const m = oldest.manifest;
  const { archive } = pitrOf(rt);
  const { names, segments } = prunable(
    await archive.files(),
    segmentOf(parseLsn(m.startLsn), m.segmentBytes),
    m.segmentBytes,
    ctx.clock().getTime(),
  );
  if (names.length) await archive.remove(names);
  return { removed, segments };
}

import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UsageError, UserError } from '../errors.ts';

// WAL positions, segment names and the archive folder's contents: no server, no runtime.

/** The archive script's file name, in database/infra/scripts/ and wherever a runtime installs it. */
export const ARCHIVE_SCRIPT = 'wal-archive.sh';

/**
 * In the data directory once the archive is armed (db:backup --physical): from then on the script
 * fails, rather than discards a segment, when the archive folder is missing. Base backups copy it, so
 * restored clusters and standbys built from an armed one are armed too.
 */
export const ARMED_FILE = 'pg-deploy.wal-armed';

/** What ARMED_FILE says to someone who finds it. */
export const armedText = (where: string, at: Date): string =>
  `armed ${at.toISOString()}: WAL segments go to ${where}; while this file exists, ${ARCHIVE_SCRIPT} fails (the server keeps the segment and retries) rather than discard one when that folder is missing\n`;

/** `16/B374D848` as PostgreSQL prints an LSN; a usage error names the flag otherwise. */
export function parseLsn(raw: string, flag = '--to-lsn'): bigint {
  const m = /^\s*([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})\s*$/.exec(raw);
  if (!m) {
    throw new UsageError(
      `${flag} must be a WAL location such as 0/3000060, not "${raw}"`,
      'take one from the server: SELECT pg_current_wal_lsn(); or from the log of the moment to go back to',
    );
  }
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export const formatLsn = (lsn: bigint): string =>
  `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;

/** The segment number an LSN falls in. */
export const segmentOf = (lsn: bigint, segBytes: number): bigint => lsn / BigInt(segBytes);

const hex8 = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');

/** PostgreSQL's XLogFileName: timeline, then the segment number split at 4 GB. */
export function segmentName(timeline: number, segno: bigint, segBytes: number): string {
  const perId = 0x100000000n / BigInt(segBytes);
  return `${hex8(timeline)}${hex8(segno / perId)}${hex8(segno % perId)}`;
}

/** A segment file's timeline and number; undefined for history, backup-label and partial files. */
export function parseSegment(name: string, segBytes: number): { timeline: number; segno: bigint } | undefined {
  const m = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/.exec(name);
  if (!m) return undefined;
  const perId = 0x100000000n / BigInt(segBytes);
  return { timeline: parseInt(m[1], 16), segno: BigInt(`0x${m[2]}`) * perId + BigInt(`0x${m[3]}`) };
}

export interface ArchivedSegment {
  name: string;
  timeline: number;
  segno: bigint;
  /** When it reached the archive: every commit in it happened before. */
  archivedAt: Date;
}

/** A file in the WAL archive, as a runtime lists it: its name and when it was last written. */
export interface ArchiveFile {
  name: string;
  mtimeMs: number;
}

/** The files in a host folder; a missing folder holds none. */
export async function listArchiveDir(ctx: Pick<Ctx, 'fs'>, dir: string): Promise<ArchiveFile[]> {
  const out: ArchiveFile[] = [];
  for (const name of await ctx.fs.readdir(dir).catch(() => [] as string[])) {
    const st = await ctx.fs.stat(path.join(dir, name)).catch(() => undefined); // removed since the listing
    if (st) out.push({ name, mtimeMs: st.mtimeMs });
  }
  return out;
}

/** The segments among the archive's files, oldest first. */
export function archivedSegments(files: readonly ArchiveFile[], segBytes: number): ArchivedSegment[] {
  const out: ArchivedSegment[] = [];
  for (const f of files) {
    const seg = parseSegment(f.name, segBytes);
    if (seg) out.push({ name: f.name, ...seg, archivedAt: new Date(f.mtimeMs) });
  }
  return out.sort((a, b) => (a.segno === b.segno ? a.timeline - b.timeline : a.segno < b.segno ? -1 : 1));
}

export type RecoveryTarget = { kind: 'time'; at: Date; text: string } | { kind: 'lsn'; lsn: bigint; text: string };

/**
 * `2026-12-01 14:03:07`, `2026-12-01T14:03:07.25Z`, `2026-12-01 15:03:07+01:00`: a time without a zone
 * is UTC, as the server's `timezone` is. The text PostgreSQL gets keeps every digit given.
 */
export function parseTime(raw: string): RecoveryTarget {
  const m = /^\s*(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*$/i.exec(raw);
  const zone =
    !m?.[3] || /^(z|utc)$/i.test(m[3]) ? '+00:00' : /^[+-]\d{2}$/.test(m[3]) ? `${m[3]}:00` : m[3].replace(/^([+-]\d{2})(\d{2})$/, '$1:$2');
  const at = m ? new Date(`${m[1]}T${m[2]}${zone}`) : undefined;
  // Date rolls 2026-02-30 over to March: the calendar date must be one.
  const [y, mo, d] = (m?.[1] ?? '0-0-0').split('-').map(Number);
  const real = new Date(Date.UTC(y, mo - 1, d));
  const calendar = real.getUTCFullYear() === y && real.getUTCMonth() === mo - 1 && real.getUTCDate() === d;
  if (!m || !at || Number.isNaN(at.getTime()) || !calendar) {
    throw new UsageError(
      `--to-time must be a date and time such as "2026-12-01 14:03:07" (UTC) or "2026-12-01T15:03:07+01:00", not "${raw}"`,
      'give the moment to go back to; without a zone it is UTC, as the server logs',
    );
  }
  return { kind: 'time', at, text: `${m[1]} ${m[2]}${zone}` };
}

/** What `target` is for people: the time in ISO form, or the LSN. */
export const targetText = (t: RecoveryTarget): string => (t.kind === 'time' ? t.at.toISOString() : formatLsn(t.lsn));

/**
 * Whether the archive can take a base backup that starts in segment `from` (timeline `timeline`) to
 * `target`: every segment from `from` to the newest archived one, with none missing, and the newest
 * reaching past the target. A segment of a later timeline (after an earlier recovery) stands in for
 * its number. Throws the first problem as one line.
 */
export function checkArchive(
  segments: readonly ArchivedSegment[],
  from: { segno: bigint; timeline: number },
  target: RecoveryTarget,
  segBytes: number,
  where: string,
): { last: ArchivedSegment; count: number } {
  const have = new Map<bigint, ArchivedSegment>();
  for (const s of segments) if (s.timeline >= from.timeline && s.segno >= from.segno) have.set(s.segno, s);
  const nums = [...have.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const last = nums.length ? have.get(nums[nums.length - 1])! : undefined;
  for (let n = from.segno; last && n <= last.segno; n++) {
    if (!have.has(n)) {
      throw new UserError(
        `the WAL archive is missing segment ${segmentName(from.timeline, n, segBytes)}, which the recovery needs (${where} holds ${segmentName(from.timeline, from.segno, segBytes)} onwards with this gap); nothing was changed`,
        'put the segment back into the archive if you have a copy; otherwise only a time before the gap, from a base backup taken after it, can be reached: pnpm db:backup --physical',
      );
    }
  }
  const reaches =
    last && (target.kind === 'time' ? last.archivedAt.getTime() >= target.at.getTime() : (last.segno + 1n) * BigInt(segBytes) > target.lsn);
  if (!last || !reaches) {
    throw new UserError(
      `the WAL archive (${where}) ends ${last ? `with ${last.name}, archived ${last.archivedAt.toISOString()},` : 'before the base backup starts,'} before ${targetText(target)}; nothing was changed`,
      'pick an earlier target; with the server running, db:restore first archives everything written up to now (is the server up? pnpm db:up)',
    );
  }
  return { last, count: Number(last.segno - from.segno) + 1 };
}

/**
 * The archived files older than segment `keepFrom` (the oldest kept base backup's start): segments,
 * `.backup` labels and `.partial` files of lower numbers; history files always stay (they are tiny
 * and every later timeline needs them). Also a copy the script never finished, once it is clearly
 * abandoned (the script removes its own on exit). `segments` counts the first kind.
 */
export function prunable(
  files: readonly ArchiveFile[],
  keepFrom: bigint,
  segBytes: number,
  nowMs: number,
): { names: string[]; segments: number } {
  const names: string[] = [];
  let segments = 0;
  for (const { name, mtimeMs } of files) {
    if (/^\..*\.\d+\.tmp$/.test(name)) {
      if (mtimeMs < nowMs - 3_600_000) names.push(name);
      continue;
    }
    const seg = parseSegment(name.slice(0, 24), segBytes);
    if (!seg || name.endsWith('.history') || seg.segno >= keepFrom) continue;
    names.push(name);
    segments++;
  }
  return { names, segments };
}

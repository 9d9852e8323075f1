import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';

// golang-migrate's own pattern (source/parse.go), so both runners see the same set of files.
export const FILE_RE = /^([0-9]+)_(.*)\.(down|up)\.(.*)$/;

export interface MigrationFile {
  file: string;
  sql: string;
  checksum: string;
}

export interface Migration {
  version: number;
  name: string;
  up: MigrationFile;
  down: MigrationFile;
}

/** Files that are not migrations and may live in the folder. */
const IGNORED = /^(\..*|README(\.md)?)$/i;

export function checksum(sql: string): string {
  return createHash('sha256').update(sql).digest('hex');
}

/**
 * Reads and validates every migration before anything runs: a name that does not match, a
 * duplicate version, an up without its down (or the reverse), an empty file. Each problem is one
 * line naming the file; any problem means nothing is applied.
 */
export async function loadMigrations(ctx: Pick<Ctx, 'fs'>, dir: string): Promise<Migration[]> {
  let names: string[];
  try {
    names = (await ctx.fs.readdir(dir)).sort();
  } catch {
    throw new UserError(`the migrations folder ${dir} does not exist`, 'create it, or set DB_MIGRATIONS_DIR');
  }
  const problems: string[] = [];
  const byVersion = new Map<number, { name: string; up?: MigrationFile; down?: MigrationFile }>();
  for (const name of names) {
    if (IGNORED.test(name)) continue;
    const m = FILE_RE.exec(name);
    if (!m) {
      problems.push(`${name}: not a migration name (expected NNNNNN_name.up.sql / NNNNNN_name.down.sql)`);
      continue;
    }
    const version = Number(m[1]);
    if (!Number.isSafeInteger(version)) {
      problems.push(`${name}: version ${m[1]} is too large`);
      continue;
    }
    const sql = await ctx.fs.readFile(path.join(dir, name), 'utf8');
    if (!sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, '').trim()) problems.push(`${name}: the file is empty`);
    const entry = byVersion.get(version) ?? { name: m[2] };
    const dirn = m[3] as 'up' | 'down';
    if (entry[dirn] || entry.name !== m[2]) {
      problems.push(`${name}: version ${version} is used twice (${entry[dirn]?.file ?? `${m[1]}_${entry.name}`})`);
      continue;
    }
    entry[dirn] = { file: name, sql, checksum: checksum(sql) };
    byVersion.set(version, entry);
  }
  const out: Migration[] = [];
  for (const [version, e] of [...byVersion].sort((a, b) => a[0] - b[0])) {
    if (!e.up) problems.push(`${e.down!.file}: has no matching .up. file`);
    else if (!e.down) problems.push(`${e.up.file}: has no matching .down. file`);
    else out.push({ version, name: e.name, up: e.up, down: e.down });
  }
  if (problems.length) {
    throw new UserError(`invalid migrations, nothing was applied:\n  ${problems.join('\n  ')}`, `fix the files in ${dir}`);
  }
  return out;
}

/**
 * Statements PostgreSQL refuses inside a transaction block, and files that manage their own
 * transactions: these run as golang-migrate runs every file, guarded by the dirty flag.
 */
export function needsOwnTransaction(sql: string): boolean {
  const code = sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\/|'(?:[^']|'')*'/g, ' ');
  return /\bCONCURRENTLY\b|\bVACUUM\b|\b(CREATE|DROP)\s+(DATABASE|TABLESPACE)\b|\bALTER\s+SYSTEM\b|(^|;)\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END)\s*(;|$)/im.test(code);
}

/** The next file name for `db:migrate:create`: 6-digit sequence (as `migrate create -seq`) or a UTC timestamp. */
export function nextVersion(existing: readonly number[], now: Date, timestamp: boolean): string {
  if (timestamp) return now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const next = (existing.length ? Math.max(...existing) : 0) + 1;
  return String(next).padStart(6, '0');
}

/** 1-based line of a character offset (PostgreSQL error positions are 1-based characters). */
export function lineOf(sql: string, position: number): number {
  return sql.slice(0, Math.max(0, position - 1)).split('\n').length;
}

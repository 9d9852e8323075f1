import path from 'node:path';
import { readdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { UserError } from '../errors.ts';
import { codeOnly, mustBeAlone } from './statements.ts';
import { decodeUtf8, NotUtf8Error } from './utf8.ts';

// golang-migrate's own pattern (source/parse.go, v4.18.3), so both runners see the same files.
export const FILE_RE = /^([0-9]+)_(.*)\.(down|up)\.(.*)$/;

export interface ParsedName {
  version: number;
  name: string;
  direction: 'up' | 'down';
  ext: string;
}

export function parseName(file: string): ParsedName | undefined {
  const m = FILE_RE.exec(file);
  if (!m) return undefined;
  return { version: Number(m[1]), name: m[2], direction: m[3] as 'up' | 'down', ext: m[4] };
}

export interface MigrationFile {
  readonly file: string;
  readonly dir: string; // its folder
  readonly sql: string;
  readonly checksum: string;
}

export interface Migration {
  version: number;
  name: string;
  up: MigrationFile;
  down: MigrationFile;
}

// Read when first asked for, synchronously: a run with nothing to do reads no file (bench/README.md).
class LazyFile implements MigrationFile {
  #sql?: string;
  #sum?: string;
  constructor(
    readonly dir: string,
    readonly file: string,
  ) {}
  get sql(): string {
    return (this.#sql ??= decodeUtf8(readFileSync(path.join(this.dir, this.file))));
  }
  get checksum(): string {
    return (this.#sum ??= checksum(this.sql));
  }
}

const IGNORED = /^(\..*|README(\.md)?)$/i;

export function checksum(sql: string): string {
  return createHash('sha256').update(sql).digest('hex');
}

/** The folder's files, sorted; directories are skipped, as golang-migrate skips them. */
function listFiles(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => !e.isDirectory() && !IGNORED.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    throw new UserError(`the migrations folder ${dir} does not exist`, 'create it, or set DB_MIGRATIONS_DIR');
  }
}

export interface LoadOptions {
  texts?: 'all' | 'later'; // later: `checkFiles` checks the files that will run
}

/** Reads and validates the migrations (names, versions, pairs, texts): a problem a line, and any means nothing runs. */
export function loadMigrations(dir: string, opts: LoadOptions = {}): Migration[] {
  const names = listFiles(dir);
  const problems: string[] = [];
  const byVersion = new Map<number, { name: string; digits: string; up?: MigrationFile; down?: MigrationFile }>();
  for (const file of names) {
    const p = parseName(file);
    if (!p) {
      problems.push(`${file}: not a migration name (expected NNNNNN_name.up.sql and NNNNNN_name.down.sql)`);
      continue;
    }
    if (!Number.isSafeInteger(p.version)) {
      problems.push(`${file}: version ${FILE_RE.exec(file)![1]} is too large`);
      continue;
    }
    const digits = FILE_RE.exec(file)![1];
    const entry = byVersion.get(p.version) ?? { name: p.name, digits };
    const other = entry[p.direction]?.file ?? (entry.name !== p.name ? `${entry.digits}_${entry.name}.*` : undefined);
    if (other) {
      problems.push(`${file}: version ${p.version} is used twice (also ${other})`);
      continue;
    }
    entry[p.direction] = new LazyFile(dir, file);
    byVersion.set(p.version, entry);
  }
  const out: Migration[] = [];
  for (const [version, e] of [...byVersion].sort((a, b) => a[0] - b[0])) {
    if (!e.up) problems.push(`${e.down!.file}: has no matching .up. file`);
    else if (!e.down) problems.push(`${e.up.file}: has no matching .down. file`);
    else out.push({ version, name: e.name, up: e.up, down: e.down });
  }
  // A refused run reports every problem at once, texts included.
  if (opts.texts !== 'later' || problems.length)
    problems.push(...textProblems([...byVersion.values()].flatMap((e) => [e.up, e.down].filter((f): f is MigrationFile => !!f))));
  if (problems.length) throw invalid(problems, dir);
  return out;
}

function invalid(problems: readonly string[], dir: string): UserError {
  return new UserError(`invalid migrations, nothing was applied:\n  ${problems.join('\n  ')}`, `fix the files in ${dir}`);
}

/** Checks the texts of the files about to run; any problem means nothing runs. */
export function checkFiles(files: readonly MigrationFile[]): void {
  const problems = textProblems(files);
  if (problems.length) throw invalid(problems, files[0].dir);
}

function textProblems(files: readonly MigrationFile[]): string[] {
  const problems: string[] = [];
  for (const f of files) {
    let sql: string;
    try {
      sql = f.sql;
    } catch (e) {
      problems.push(
        e instanceof NotUtf8Error
          ? `${f.file}: ${e.message}; save it as UTF-8 (iconv -f latin1 -t utf-8)`
          : `${f.file}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      );
      continue;
    }
    const code = codeOnly(sql);
    if (!code.replace(/;/g, ' ').trim()) problems.push(`${f.file}: the file is empty (only comments or blanks)`);
    const alone = mustBeAlone(sql, code);
    if (alone)
      problems.push(
        `${f.file}: ${alone} must be the only statement in its file (PostgreSQL runs a file of several statements as one transaction, which ${alone} refuses)`,
      );
  }
  return problems;
}

/** The versions in the folder, by name only: a new file may still be a stub. */
export function existingVersions(dir: string): number[] {
  return listFiles(dir)
    .map(parseName)
    .filter((p): p is ParsedName => p !== undefined)
    .map((p) => p.version);
}

/** A 6-digit sequence (as `migrate create -seq`) or a UTC timestamp. */
export function nextVersion(existing: readonly number[], now: Date, timestamp: boolean): string {
  if (timestamp) return now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const next = (existing.length ? Math.max(...existing) : 0) + 1;
  return String(next).padStart(6, '0');
}

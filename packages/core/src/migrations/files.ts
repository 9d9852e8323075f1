import path from 'node:path';
import { readdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { UserError } from '../errors.ts';

// golang-migrate's own pattern (source/parse.go, v4.18.3), so both runners see the same set of files.
export const FILE_RE = /^([0-9]+)_(.*)\.(down|up)\.(.*)$/;

export interface ParsedName {
  version: number;
  name: string;
  direction: 'up' | 'down';
  ext: string;
}

/** A file name as golang-migrate reads it, or undefined when it is not a migration's name. */
export function parseName(file: string): ParsedName | undefined {
  const m = FILE_RE.exec(file);
  if (!m) return undefined;
  return { version: Number(m[1]), name: m[2], direction: m[3] as 'up' | 'down', ext: m[4] };
}

export interface MigrationFile {
  readonly file: string;
  /** The folder it is in. */
  readonly dir: string;
  readonly sql: string;
  readonly checksum: string;
}

export interface Migration {
  version: number;
  name: string;
  up: MigrationFile;
  down: MigrationFile;
}

/**
 * A file whose text is read when first asked for, and its checksum computed then: a run with
 * nothing to do reads no file at all, only the folder. Read synchronously on purpose: each promise
 * read is four trips through libuv's thread pool, and two thousand small files read that way took
 * ten times longer (about 300 ms against 30 ms here). A class, not an object of getters: thousands
 * are made per run, and a class shares its getters.
 * The text must be UTF-8 (the client encoding both runners use): anything else would reach the
 * server as other text than the file holds (a Latin-1 "é" becomes U+FFFD), so reading it throws.
 */
class LazyFile implements MigrationFile {
  #sql?: string;
  #sum?: string;
  constructor(readonly dir: string, readonly file: string) {}
  get sql(): string {
    return (this.#sql ??= decodeUtf8(readFileSync(path.join(this.dir, this.file))));
  }
  get checksum(): string {
    return (this.#sum ??= checksum(this.sql));
  }
}

/** A file that is not valid UTF-8: where the first bad byte is. */
export class NotUtf8Error extends Error {
  constructor(readonly byte: number, readonly line: number, readonly column: number) {
    super(`not valid UTF-8: byte 0x${byte.toString(16).toUpperCase().padStart(2, '0')} at line ${line}, column ${column} (saved as Latin-1 or Windows-1252?)`);
    this.name = 'NotUtf8Error';
  }
}

// fatal: a bad byte throws instead of becoming U+FFFD; ignoreBOM: a BOM stays in the text, as it did.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < at; i++) if (bytes[i] === 10) (line++, (lineStart = i + 1));
    // The column in characters, as an editor shows it: the line up to the bad byte is valid.
    const column = [...utf8.decode(bytes.subarray(lineStart, at))].length + 1;
    throw new NotUtf8Error(bytes[at], line, column);
  }
}

/** Offset of the first byte that breaks UTF-8 (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF). */
function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    const n = c < 0x80 ? 0 : c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
    if (n < 0) return i;
    // The second byte's range is narrower after E0, ED, F0 and F4.
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    for (let k = 1; k <= n; k++) {
      const x = b[i + k];
      if (x === undefined || x < (k === 1 ? lo : 0x80) || x > (k === 1 ? hi : 0xbf)) return i;
    }
    i += n + 1;
  }
  return b.length;
}

/** Files that are not migrations and may live in the folder. */
const IGNORED = /^(\..*|README(\.md)?)$/i;

export function checksum(sql: string): string {
  return createHash('sha256').update(sql).digest('hex');
}

/**
 * The folder's entries that are files, sorted; directories are skipped, as golang-migrate skips them.
 * Synchronous, as the reads below: one call, where the promise form costs three times as much for
 * a folder of two thousand files.
 */
function listFiles(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => !e.isDirectory() && !IGNORED.test(e.name)).map((e) => e.name).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    throw new UserError(`the migrations folder ${dir} does not exist`, 'create it, or set DB_MIGRATIONS_DIR');
  }
}

export interface LoadOptions {
  /**
   * Check every file's text now (the default), or only the names, leaving the texts to
   * `checkFiles` once the caller knows which files it will run: a run with nothing pending then
   * reads no file, and a run reads only what it applies.
   */
  texts?: 'all' | 'later';
}

/**
 * Reads and validates the migrations before anything runs: a name that does not match, a
 * duplicate version, an up without its down (or the reverse); with `texts: 'all'`, also every
 * file's text (see checkFiles). Each problem is one line naming the file; any problem means
 * nothing runs.
 */
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
  // With a bad name the run is refused anyway: then every text is checked too, so one run reports every problem.
  if (opts.texts !== 'later' || problems.length) problems.push(...textProblems([...byVersion.values()].flatMap((e) => [e.up, e.down].filter((f): f is MigrationFile => !!f))));
  if (problems.length) throw invalid(problems, dir);
  return out;
}

function invalid(problems: readonly string[], dir: string): UserError {
  return new UserError(`invalid migrations, nothing was applied:\n  ${problems.join('\n  ')}`, `fix the files in ${dir}`);
}

/**
 * Checks the texts of the files about to run: an empty file (only comments or blanks), a statement
 * that must be alone in its file, a file that cannot be read or is not UTF-8. Any problem means
 * nothing runs.
 */
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
    if (alone) problems.push(`${f.file}: ${alone} must be the only statement in its file (PostgreSQL runs a file of several statements as one transaction, which ${alone} refuses)`);
  }
  return problems;
}

/** The versions in the folder, by name only: `db:migrate:create` must work while a new file is still a stub. */
export function existingVersions(dir: string): number[] {
  return listFiles(dir).map(parseName).filter((p): p is ParsedName => p !== undefined).map((p) => p.version);
}

export interface Statement {
  /** Where `text` begins in the file (JS string indexes, as every offset here). */
  offset: number;
  /** Where its first significant character is: the line a person would look at. */
  start: number;
  text: string;
}

/**
 * Splits SQL where PostgreSQL's own lexer would: at semicolons outside quotes, dollar quotes, quoted
 * identifiers and comments. Returns undefined for what it cannot split with certainty (SQL-standard
 * `BEGIN ATOMIC` bodies hold semicolons of their own), so callers fall back to the whole file.
 */
export function splitStatements(sql: string): Statement[] | undefined {
  const out: Statement[] = [];
  let begin = 0; // where the current statement's text starts
  let first = -1; // its first significant character
  let i = 0;
  const n = sql.length;
  const identChar = (ch: string | undefined) => ch !== undefined && /[A-Za-z0-9_$\u0080-\uffff]/.test(ch);
  const mark = () => {
    if (first < 0) first = i;
  };
  while (i < n) {
    const ch = sql[i];
    const next = sql[i + 1];
    if (ch === '-' && next === '-') {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
    } else if (ch === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') { depth++; i += 2; }
        else if (sql[i] === '*' && sql[i + 1] === '/') { depth--; i += 2; }
        else i++;
      }
    } else if (ch === "'") {
      mark();
      const escapes = /[eE]/.test(sql[i - 1] ?? '') && !identChar(sql[i - 2]);
      i++;
      while (i < n) {
        if (escapes && sql[i] === '\\') i += 2;
        else if (sql[i] === "'" && sql[i + 1] === "'") i += 2;
        else if (sql[i] === "'") { i++; break; }
        else i++;
      }
    } else if (ch === '"') {
      mark();
      i++;
      while (i < n) {
        if (sql[i] === '"' && sql[i + 1] === '"') i += 2;
        else if (sql[i] === '"') { i++; break; }
        else i++;
      }
    } else if (ch === '$' && !identChar(sql[i - 1])) {
      mark();
      const tag = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 64));
      if (tag) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        i = end < 0 ? n : end + tag[0].length;
      } else i++;
    } else if (ch === ';') {
      if (first >= 0) out.push({ offset: begin, start: first, text: sql.slice(begin, i + 1) });
      begin = i + 1;
      first = -1;
      i++;
    } else if (/\s/.test(ch)) {
      i++;
    } else {
      mark();
      if (/[Bb]/.test(ch) && !identChar(sql[i - 1]) && /^begin\s+atomic\b/i.test(sql.slice(i, i + 32))) return undefined;
      i++;
    }
  }
  if (first >= 0) out.push({ offset: begin, start: first, text: sql.slice(begin) });
  return out;
}

/** SQL with comments, quoted text and dollar-quoted bodies blanked out: what is left are keywords and names. */
function codeOnly(sql: string): string {
  return sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\/|'(?:[^']|'')*'|"(?:[^"]|"")*"|(\$[A-Za-z_]*\$)[\s\S]*?\1/g, ' ');
}

/**
 * Statements PostgreSQL refuses inside a transaction block, and files that manage their own
 * transactions: these run as golang-migrate runs every file, guarded by the dirty flag. Function
 * bodies are blanked first: a PL/pgSQL `BEGIN ... END;` is not transaction control.
 */
export function needsOwnTransaction(sql: string): boolean {
  const code = codeOnly(sql).replace(/\s+/g, ' ');
  if (/\bCONCURRENTLY\b|\bVACUUM\b|\b(CREATE|DROP)\s+(DATABASE|TABLESPACE)\b|\bALTER\s+SYSTEM\b/i.test(code)) return true;
  if (/(^|;)\s*(BEGIN(?!\s+ATOMIC)|START\s+TRANSACTION|COMMIT|ROLLBACK|ABORT)\b/i.test(code)) return true;
  // END closes a transaction, unless it closes a SQL-standard function body.
  return !/\bBEGIN\s+ATOMIC\b/i.test(code) && /(^|;)\s*END\s*(;|$)/i.test(code);
}

/** The statement that cannot share its file, when the file holds more than one statement. */
function mustBeAlone(sql: string, code: string): string | undefined {
  const m = /\b(CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY|DROP\s+INDEX\s+CONCURRENTLY|REINDEX\b[^;]*\bCONCURRENTLY|VACUUM|(?:CREATE|DROP)\s+(?:DATABASE|TABLESPACE)|ALTER\s+SYSTEM)\b/i.exec(code);
  if (!m) return undefined;
  if (/(^|;)\s*(BEGIN|COMMIT|START\s+TRANSACTION)\b/i.test(code)) return undefined; // the file manages its transactions itself
  const stmts = splitStatements(sql);
  return stmts && stmts.length > 1 ? m[1].replace(/\s+/g, ' ').toUpperCase() : undefined;
}

/** The next file name for `db:migrate:create`: 6-digit sequence (as `migrate create -seq`) or a UTC timestamp. */
export function nextVersion(existing: readonly number[], now: Date, timestamp: boolean): string {
  if (timestamp) return now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const next = (existing.length ? Math.max(...existing) : 0) + 1;
  return String(next).padStart(6, '0');
}

/** JS string index of a PostgreSQL error position (1-based, counted in characters, not UTF-16 units). */
export function indexOfPosition(sql: string, position: number): number {
  let index = 0;
  for (let chars = 1; chars < position && index < sql.length; chars++) index += sql.codePointAt(index)! > 0xffff ? 2 : 1;
  return index;
}

/** 1-based line of a JS string index. */
export function lineAt(sql: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index && i < sql.length; i++) if (sql.charCodeAt(i) === 10) line++;
  return line;
}

/** 1-based line of a PostgreSQL error position. */
export function lineOf(sql: string, position: number): number {
  return lineAt(sql, indexOfPosition(sql, position));
}

import path from 'node:path';
import type { Client } from 'pg';
import { UserError } from '../errors.ts';
import { sqlState } from '../pg.ts';
import type { Migration, MigrationFile } from './files.ts';
import { indexOfPosition, lineAt, lineOf, splitStatements } from './statements.ts';
import { findTables, forceCommand, readCurrent, versionLabel, type MigrationTables } from './state.ts';

function createdRelations(sql: string): string[] {
  const out: string[] = [];
  const re =
    /\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|MATERIALIZED\s+VIEW|SEQUENCE)\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?!ON\b)("[^"]+"|[\w$]+)(?:\.("[^"]+"|[\w$]+))?/gi;
  for (const m of sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, ' ').matchAll(re)) out.push(m[2] ? `${m[1]}.${m[2]}` : m[1]);
  return out;
}

type ObjectsFound = {
  state: 'applied' | 'not applied' | 'partly applied' | 'unknown';
  invalid: string[];
  present: string[];
  missing: string[];
};

/** Whether what `m`'s up file creates exists and is valid: "unknown" when its text names nothing to look up. */
async function inspectObjects(c: Client, m: Migration | undefined): Promise<ObjectsFound> {
  const out: ObjectsFound = { state: 'unknown', invalid: [], present: [], missing: [] };
  let rels: string[];
  try {
    rels = m ? createdRelations(m.up.sql) : [];
  } catch {
    return out; // a file that cannot be read (gone, not UTF-8): nothing to compare
  }
  if (!rels.length) return out;
  try {
    const { rows } = await c.query<{ name: string; present: boolean; valid: boolean }>(
      `SELECT r.name, c.oid IS NOT NULL AS present, coalesce(i.indisvalid, true) AS valid
         FROM unnest($1::text[]) AS r(name) LEFT JOIN pg_class c ON c.oid = to_regclass(r.name) LEFT JOIN pg_index i ON i.indexrelid = c.oid`,
      [rels],
    );
    for (const r of rows) (r.present ? (r.valid ? out.present : out.invalid) : out.missing).push(r.name);
  } catch {
    return out; // a name we could not parse: say "unknown" rather than guess
  }
  out.state = out.invalid.length
    ? 'partly applied'
    : !out.missing.length
      ? 'applied'
      : !out.present.length
        ? 'not applied'
        : 'partly applied';
  return out;
}

export interface HintPaths {
  root: string;
  secretsDir: string;
  sslDir: string;
}

const DEFAULT_PATHS: HintPaths = { root: '', secretsDir: 'database/infra/secrets', sslDir: 'database/infra/ssl' };

function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** How to run `sql` as the migration role (`c`'s login), which owns what migrations made; db:psql's role is not the owner. */
function asOwner(c: Client, sql: string, paths: HintPaths = DEFAULT_PATHS): string {
  const shown = (p: string) => {
    const rel = paths.root ? path.relative(paths.root, p) : p;
    return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
  };
  const v = (x: string | number) => (/^[\w./-]+$/.test(String(x)) ? String(x) : `'${String(x).replace(/[\\']/g, '\\$&')}'`);
  const tls = c.host.startsWith('/') ? '' : ` sslmode=verify-full sslrootcert=${v(shown(path.join(paths.sslDir, 'ca.crt')))}`;
  const conninfo = `host=${v(c.host)} port=${c.port} dbname=${v(c.database ?? '')} user=${v(c.user ?? '')}${tls}`;
  // psql asks for the password: a PGPASSWORD=... in the hint would be redacted.
  return (
    `run the DROP as ${c.user}, the migration role, which owns the index (pnpm db:psql logs in as the application role, which gets "must be owner"; ` +
    `psql asks for the password in ${shown(path.join(paths.secretsDir, 'migrate_password'))}): psql ${shellWord(conninfo)} -c ${shellWord(sql)}`
  );
}

/** A dirty database in golang-migrate's words, which file stopped part-way, whether its objects exist, and the way out. */
export async function dirtyError(
  c: Client,
  tables: MigrationTables,
  version: number | null,
  migrations: readonly Migration[],
  paths?: HintPaths,
): Promise<UserError> {
  const head = `Dirty database version ${version ?? -1}. Fix and force version.`;
  const idx = version === null ? -1 : migrations.findIndex((m) => m.version === version);
  const next = migrations.find((m) => version === null || m.version > version);
  // Only a failed roll-back of the first migration writes (-1, dirty).
  let rollingBack = version === null && next !== undefined;
  if (!rollingBack && next && tables.hasHistoryTable) {
    const { rows } = await c.query(`SELECT 1 FROM ${tables.historyTable} WHERE version = $1`, [next.version]);
    // A history row with the version's objects gone is stale: golang-migrate rolled back, then this up failed.
    rollingBack = rows.length > 0 && (idx < 0 || (await inspectObjects(c, migrations[idx])).state !== 'not applied');
  }
  const lines: string[] = [];
  let hint: string;
  if (rollingBack) {
    const objects = await inspectObjects(c, next);
    lines.push(
      `${next!.down.file} (rolling back to ${versionLabel(version)}) stopped part-way; ` +
        `the objects its up file creates look ${objects.state === 'applied' ? 'still present' : objects.state === 'not applied' ? 'gone' : objects.state}`,
    );
    hint =
      objects.state === 'applied'
        ? `if the roll-back did nothing: ${forceCommand(next!.version)}`
        : objects.state === 'not applied'
          ? `if the roll-back completed: ${forceCommand(version)}`
          : `finish ${next!.down.file} by hand, then ${forceCommand(version)}; or undo what it did, then ${forceCommand(next!.version)}`;
  } else if (idx < 0) {
    lines.push(`no migration file has version ${versionLabel(version)}`);
    hint = `restore the file, or force a version that exists: ${forceCommand(migrations.at(-1)?.version ?? null)}`;
  } else {
    const m = migrations[idx];
    const prev = idx > 0 ? migrations[idx - 1].version : null;
    const objects = await inspectObjects(c, m);
    const detail = objects.invalid.length
      ? `; INVALID (interrupted CREATE INDEX CONCURRENTLY): ${objects.invalid.join(', ')}`
      : objects.state === 'partly applied'
        ? `; present: ${objects.present.join(', ')}; missing: ${objects.missing.join(', ')}`
        : '';
    lines.push(`${m.up.file} stopped part-way; its objects look ${objects.state}${detail}`);
    hint =
      objects.state === 'applied'
        ? `if the file completed: ${forceCommand(m.version)}`
        : objects.state === 'not applied'
          ? `nothing of it is there: ${forceCommand(prev)}, then pnpm db:migrate`
          : objects.invalid.length
            ? `drop the invalid index (DROP INDEX CONCURRENTLY ${objects.invalid.join(', ')}), then ${forceCommand(prev)}, then pnpm db:migrate; ` +
              asOwner(c, `DROP INDEX CONCURRENTLY ${objects.invalid.join(', ')}`, paths)
            : `check what ${m.up.file} did: if it completed, ${forceCommand(m.version)}; if not, undo it, then ${forceCommand(prev)} and pnpm db:migrate`;
  }
  return new UserError(`${head}\n  ${lines.join('\n  ')}`, hint);
}

/** An error's line: PostgreSQL's position, a lone statement's, or (`replay`) the one failing alike in a rolled-back replay. */
export async function errorLine(c: Client, sql: string, e: unknown, replay: boolean, elapsedMs: number): Promise<number | undefined> {
  const code = sqlState(e);
  const { position } = e as { position?: string };
  if (position) return lineOf(sql, Number(position));
  const stmts = splitStatements(sql);
  if (!stmts?.length) return undefined;
  if (stmts.length === 1) return lineAt(sql, stmts[0].start);
  if (!replay || !code || elapsedMs > 2000) return undefined;
  try {
    await c.query(`BEGIN; SET LOCAL statement_timeout = ${Math.max(1000, Math.ceil(elapsedMs) * 3)}`);
    for (const s of stmts) {
      try {
        await c.query(s.text);
      } catch (e) {
        if (sqlState(e) !== code) return undefined;
        const at = (e as { position?: string }).position;
        return at ? lineAt(sql, s.offset + indexOfPosition(s.text, Number(at))) : lineAt(sql, s.start);
      }
    }
    return undefined;
  } catch {
    return undefined; // the replay is a guess: no line rather than another error
  } finally {
    await c.query('ROLLBACK').catch(() => {}); // nothing to keep; a dead connection has rolled back already
  }
}

export function fileMessage(f: MigrationFile, e: unknown, line: number | undefined): string {
  const err = e as { message?: string; detail?: string };
  return `${f.file}${line ? `:${line}` : ''}: ${err.message ?? String(e)}${err.detail ? ` (${err.detail})` : ''}`;
}

/** A transactional file's failure with its line; what is not PostgreSQL's answer (a lost connection) is rethrown. */
export async function transactionFailure(
  c: Client,
  f: MigrationFile,
  e: unknown,
  elapsedMs: number,
  before: number | null,
  nothing?: string,
): Promise<UserError> {
  if (!sqlState(e)) throw e;
  const line = await errorLine(c, f.sql, e, true, elapsedMs);
  return new UserError(
    fileMessage(f, e, line),
    `${nothing ?? `nothing of ${f.file} was applied (it ran in a transaction, rolled back); the version is still ${versionLabel(before)}, not dirty`}. Fix the file and run the command again`,
  );
}

/** For db:status (docker's golang-migrate prints one line): what is dirty and the way out; undefined when clean. */
export async function dirtyReport(
  c: Client,
  migrations: readonly Migration[],
  paths?: HintPaths,
): Promise<{ problem: string; fix: string } | undefined> {
  const tables = await findTables(c);
  if (!tables.hasVersionTable) return undefined;
  const cur = await readCurrent(c, tables);
  if (!cur.dirty) return undefined;
  const e = await dirtyError(c, tables, cur.version, migrations, paths);
  return {
    problem: e.message
      .split('\n')
      .slice(1)
      .map((l) => l.trim())
      .join('; '),
    fix: e.hint ?? '',
  };
}

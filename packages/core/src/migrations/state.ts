import type { Client, QueryResult } from 'pg';
import { UserError } from '../errors.ts';
import { ident, lastResult, literal } from '../pg.ts';
import type { Migration } from './files.ts';

/** golang-migrate's table; at most one row. */
export const VERSION_TABLE = 'schema_migrations';
/** Ours, which golang-migrate ignores: what was applied, when, by whom, from which file. */
export const HISTORY_TABLE = `${VERSION_TABLE}_history`;

export const VERSION_DDL = '(version bigint not null primary key, dirty boolean not null)';
export const HISTORY_DDL = `(version bigint primary key, name text not null, checksum text not null,
  applied_at timestamptz not null default now(), duration_ms integer not null, applied_by text not null default current_user)`;

/** The state's tables in current_schema(), where golang-migrate puts its table. */
export interface MigrationTables {
  schema: string;
  database: string;
  pid: number; // this session's backend, for the lock watch
  versionTable: string; // quoted, schema-qualified
  historyTable: string;
  hasVersionTable: boolean;
  hasHistoryTable: boolean;
}

export async function findTables(c: Client, prelude = ''): Promise<MigrationTables> {
  const regclass = (table: string) => `to_regclass(format('%I.%I', current_schema(), ${literal(table)})) IS NOT NULL`;
  const res = await c.query(`${prelude}SELECT current_schema() AS schema, current_database() AS db, pg_backend_pid() AS pid,
    CASE WHEN current_schema() IS NOT NULL THEN ${regclass(VERSION_TABLE)} END AS has_t,
    CASE WHEN current_schema() IS NOT NULL THEN ${regclass(HISTORY_TABLE)} END AS has_h`);
  const r = lastResult(res as unknown as QueryResult | QueryResult[]).rows[0];
  if (!r.schema) {
    throw new UserError(
      `there is no schema to keep ${VERSION_TABLE} in: search_path names no schema that exists`,
      'check SHOW search_path for the migration role',
    );
  }
  return {
    schema: r.schema,
    database: r.db,
    pid: r.pid,
    versionTable: `${ident(r.schema)}.${ident(VERSION_TABLE)}`,
    historyTable: `${ident(r.schema)}.${ident(HISTORY_TABLE)}`,
    hasVersionTable: r.has_t === true,
    hasHistoryTable: r.has_h === true,
  };
}

export interface Current {
  version: number | null;
  dirty: boolean;
}

/** The one row; golang-migrate writes (-1, dirty) for a failed roll-back of the first migration. */
export async function readCurrent(c: Client, tables: MigrationTables, prelude = ''): Promise<Current> {
  const res = await c.query(`${prelude}SELECT version, dirty FROM ${tables.versionTable} LIMIT 1`);
  const { rows } = lastResult(res as unknown as QueryResult | QueryResult[]);
  if (!rows.length) return { version: null, dirty: false };
  const v = Number(rows[0].version);
  return { version: v < 0 ? null : v, dirty: rows[0].dirty };
}

/**
 * The single-row rewrite, for the caller's transaction: DELETE, not golang-migrate's TRUNCATE, so
 * `db:status` reads the old row meanwhile. Versions are parsed numbers, safe to inline.
 */
export function setVersionSql(tables: MigrationTables, version: number | null, dirty: boolean): string {
  const del = `DELETE FROM ${tables.versionTable}`;
  if (version === null && !dirty) return del;
  return `${del}; INSERT INTO ${tables.versionTable} (version, dirty) VALUES (${version ?? -1}, ${dirty})`;
}

export function historySql(tables: MigrationTables, m: Migration, dir: 'up' | 'down', ms: number): string {
  if (dir === 'down') return `DELETE FROM ${tables.historyTable} WHERE version = ${m.version}`;
  return `INSERT INTO ${tables.historyTable} (version, name, checksum, duration_ms) VALUES (${m.version}, ${literal(m.name)}, ${literal(m.up.checksum)}, ${Math.round(ms)})
    ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, applied_at = now(), duration_ms = EXCLUDED.duration_ms, applied_by = current_user`;
}

export const versionLabel = (v: number | null) => (v === null ? 'none' : String(v));

export const forceCommand = (v: number | null) => (v === null || v < 0 ? 'pnpm db:migrate:force -- -1' : `pnpm db:migrate:force ${v}`);

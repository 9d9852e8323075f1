import type { Client } from 'pg';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { ident } from '../pg.ts';
import { advisoryLockKey } from './lock.ts';
import { lineOf, needsOwnTransaction, type Migration } from './files.ts';

export type Command =
  | { kind: 'up'; n?: number }
  | { kind: 'down'; n: number | 'all' }
  | { kind: 'goto'; version: number }
  | { kind: 'force'; version: number };

export interface Step {
  version: number;
  name: string;
  direction: 'up' | 'down';
  ms: number;
  transactional: boolean;
}

export interface MigrateResult {
  from: number | null;
  to: number | null;
  steps: Step[];
  ms: number;
}

/** golang-migrate's table, byte for byte; it holds at most one row. */
export const VERSION_TABLE = 'schema_migrations';
/** Ours, beside it (golang-migrate ignores other tables): what was applied, when, by whom, from which file. */
export const HISTORY_TABLE = 'schema_migrations_history';

interface Where {
  schema: string;
  key: number;
  t: string;
  h: string;
}

async function where(c: Client): Promise<Where> {
  const { rows } = await c.query<{ schema: string; db: string }>('SELECT current_schema() AS schema, current_database() AS db');
  const { schema, db } = rows[0];
  return {
    schema,
    key: advisoryLockKey('/' + db, schema, VERSION_TABLE),
    t: `${ident(schema)}.${ident(VERSION_TABLE)}`,
    h: `${ident(schema)}.${ident(HISTORY_TABLE)}`,
  };
}

/** Who holds the migration lock, in words, for the timeout message. */
async function lockHolder(c: Client, key: number): Promise<string> {
  const { rows } = await c.query(
    `SELECT a.pid, a.application_name AS app, a.usename AS usr, a.client_addr AS addr, a.backend_start AS since
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1::bigint::oid AND l.objsubid = 1`,
    [key],
  );
  if (!rows.length) return 'a session that has since ended';
  const r = rows[0];
  return `pid ${r.pid} (${r.app || 'no application name'}, user ${r.usr}${r.addr ? ` from ${r.addr}` : ''}, connected since ${new Date(r.since).toISOString()})`;
}

/** Takes golang-migrate's advisory lock, waiting at most `timeoutMs`; never hangs. */
export async function acquireLock(c: Client, w: Where, timeoutMs: number): Promise<void> {
  await c.query(`SET lock_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
  try {
    await c.query('SELECT pg_advisory_lock($1)', [w.key]);
  } catch (e) {
    if ((e as { code?: string }).code !== '55P03') throw e;
    throw new UserError(
      `another migration holds the lock (key ${w.key}) for more than ${timeoutMs / 1000}s: ${await lockHolder(c, w.key)}`,
      'wait for it to finish, or end that session (SELECT pg_terminate_backend(pid)); raise DB_MIGRATE_LOCK_TIMEOUT to wait longer',
    );
  } finally {
    await c.query('SET lock_timeout TO DEFAULT');
  }
}

async function ensureTables(c: Client, w: Where): Promise<void> {
  await c.query(`CREATE TABLE IF NOT EXISTS ${w.t} (version bigint not null primary key, dirty boolean not null)`);
  await c.query(`CREATE TABLE IF NOT EXISTS ${w.h} (
    version bigint primary key, name text not null, checksum text not null,
    applied_at timestamptz not null default now(), duration_ms integer not null, applied_by text not null default current_user)`);
}

export interface Current {
  version: number | null;
  dirty: boolean;
}

async function readCurrent(c: Client, w: Where): Promise<Current> {
  const { rows } = await c.query<{ version: string; dirty: boolean }>(`SELECT version, dirty FROM ${w.t} LIMIT 1`);
  return rows.length ? { version: Number(rows[0].version), dirty: rows[0].dirty } : { version: null, dirty: false };
}

/** golang-migrate's single-row rewrite: TRUNCATE then INSERT, inside the caller's transaction. */
async function setVersion(c: Client, w: Where, version: number | null, dirty: boolean): Promise<void> {
  await c.query(`TRUNCATE ${w.t}`);
  if (version !== null) await c.query(`INSERT INTO ${w.t} (version, dirty) VALUES ($1, $2)`, [version, dirty]);
}

/** Names the objects an up file creates, to say whether a dirty migration looks applied. */
function createdRelations(sql: string): string[] {
  const out: string[] = [];
  const re = /\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|MATERIALIZED\s+VIEW|SEQUENCE)\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?("?[\w.]+"?(?:\."?\w+"?)?)/gi;
  for (const m of sql.matchAll(re)) out.push(m[1]);
  return out;
}

/** The truth about a dirty database: which file, whether its objects exist, and the exact way out. */
async function dirtyError(c: Client, version: number, migrations: readonly Migration[]): Promise<UserError> {
  const i = migrations.findIndex((m) => m.version === version);
  const m = migrations[i];
  const prev = i > 0 ? migrations[i - 1].version : -1;
  let looks = 'unknown';
  if (m) {
    const rels = createdRelations(m.up.sql);
    if (rels.length) {
      const { rows } = await c.query<{ n: number }>('SELECT count(to_regclass(r))::int AS n FROM unnest($1::text[]) r', [rels]);
      looks = rows[0].n === rels.length ? 'applied' : rows[0].n === 0 ? 'not applied' : 'partly applied';
    }
  }
  const file = m ? m.up.file : `version ${version} (no such file)`;
  const advice =
    looks === 'applied' ? `its objects exist: if the file completed, pnpm db:migrate:force ${version}` :
    looks === 'not applied' ? `its objects do not exist: pnpm db:migrate:force ${prev}, then pnpm db:migrate` :
    `check what ${file} did; if it completed: pnpm db:migrate:force ${version}; if not: pnpm db:migrate:force ${prev}, then pnpm db:migrate`;
  return new UserError(`Dirty database version ${version}. Fix and force version. (${file} stopped part-way; its objects look ${looks})`, advice);
}

function failed(m: Migration, dir: 'up' | 'down', e: unknown): UserError {
  const err = e as { message: string; position?: string };
  const f = dir === 'up' ? m.up : m.down;
  const line = err.position ? `:${lineOf(f.sql, Number(err.position))}` : '';
  return new UserError(`${f.file}${line}: ${err.message}`, 'fix the file and run the command again; the failed file left the schema and the version as they were');
}

/** Applies one file and its bookkeeping; in one transaction unless PostgreSQL forbids it. */
async function runOne(c: Client, w: Where, m: Migration, dir: 'up' | 'down', after: number | null, clock: () => Date): Promise<Step> {
  const f = dir === 'up' ? m.up : m.down;
  const start = clock().getTime();
  const book = async (ms: number) => {
    await setVersion(c, w, after, false);
    if (dir === 'up') {
      await c.query(
        `INSERT INTO ${w.h} (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, applied_at = now(), duration_ms = EXCLUDED.duration_ms, applied_by = current_user`,
        [m.version, m.name, f.checksum, ms],
      );
    } else {
      await c.query(`DELETE FROM ${w.h} WHERE version = $1`, [m.version]);
    }
  };
  const transactional = !needsOwnTransaction(f.sql);
  if (transactional) {
    await c.query('BEGIN');
    try {
      await c.query(f.sql);
      await book(clock().getTime() - start);
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {});
      throw failed(m, dir, e);
    }
  } else {
    // golang-migrate's protocol: mark dirty, run, mark clean. A failure here leaves it dirty, on purpose.
    await c.query('BEGIN');
    await setVersion(c, w, m.version, true);
    await c.query('COMMIT');
    try {
      await c.query(f.sql);
    } catch (e) {
      throw failed(m, dir, e);
    }
    await c.query('BEGIN');
    await book(clock().getTime() - start);
    await c.query('COMMIT');
  }
  return { version: m.version, name: m.name, direction: dir, ms: clock().getTime() - start, transactional };
}

/** The migrations to run, in order, to carry out `cmd` from `current`. */
export function plan(migrations: readonly Migration[], current: number | null, cmd: Exclude<Command, { kind: 'force' }>): { m: Migration; dir: 'up' | 'down'; after: number | null }[] {
  const idx = current === null ? -1 : migrations.findIndex((m) => m.version === current);
  if (current !== null && idx < 0 && cmd.kind !== 'up') {
    throw new UserError(`the database is at version ${current}, which has no migration file`, 'restore the missing files, or force a version that exists: pnpm db:migrate:force <version>');
  }
  const pending = migrations.filter((m) => current === null || m.version > current);
  const ups = (list: readonly Migration[]) => list.map((m) => ({ m, dir: 'up' as const, after: m.version }));
  const downs = (count: number) => {
    const out = [];
    for (let i = idx; i >= 0 && out.length < count; i--) out.push({ m: migrations[i], dir: 'down' as const, after: i > 0 ? migrations[i - 1].version : null });
    return out;
  };
  if (cmd.kind === 'up') return ups(cmd.n === undefined ? pending : pending.slice(0, cmd.n));
  if (cmd.kind === 'down') return downs(cmd.n === 'all' ? Infinity : cmd.n);
  const target = migrations.findIndex((m) => m.version === cmd.version);
  if (target < 0) throw new UserError(`no migration has version ${cmd.version}`, 'see the versions with: pnpm db:status');
  if (target > idx) return ups(migrations.slice(idx + 1, target + 1));
  return downs(idx - target);
}

/**
 * Runs a migration command under golang-migrate's lock, on golang-migrate's table. Refuses a dirty
 * database (with the truth about it) unless the command is `force`.
 */
export async function migrate(
  ctx: Pick<Ctx, 'log' | 'clock'>,
  c: Client,
  migrations: readonly Migration[],
  cmd: Command,
  opts: { lockTimeoutMs: number },
): Promise<MigrateResult> {
  const t0 = ctx.clock().getTime();
  const w = await where(c);
  await acquireLock(c, w, opts.lockTimeoutMs);
  try {
    await ensureTables(c, w);
    const cur = await readCurrent(c, w);
    if (cmd.kind === 'force') {
      if (cmd.version !== -1 && !migrations.some((m) => m.version === cmd.version)) {
        throw new UserError(`no migration has version ${cmd.version}`, 'force a version that exists (or -1 for none); see: pnpm db:status');
      }
      await c.query('BEGIN');
      await setVersion(c, w, cmd.version === -1 ? null : cmd.version, false);
      await c.query('COMMIT');
      return { from: cur.version, to: cmd.version === -1 ? null : cmd.version, steps: [], ms: ctx.clock().getTime() - t0 };
    }
    if (cur.dirty) throw await dirtyError(c, cur.version!, migrations);
    const todo = plan(migrations, cur.version, cmd);
    const steps: Step[] = [];
    const bar = ctx.log.spinner(todo[0]?.dir === 'down' ? 'rolling back' : 'migrating');
    try {
      for (const [i, s] of todo.entries()) {
        bar.update(i + 1, todo.length, s.dir === 'up' ? s.m.up.file : s.m.down.file);
        steps.push(await runOne(c, w, s.m, s.dir, s.after, ctx.clock));
      }
    } finally {
      bar.end();
    }
    return { from: cur.version, to: todo.length ? todo[todo.length - 1].after : cur.version, steps, ms: ctx.clock().getTime() - t0 };
  } finally {
    await c.query('SELECT pg_advisory_unlock($1)', [w.key]).catch(() => {});
  }
}

export interface StatusEntry {
  version: number;
  name: string;
  file: string;
  appliedAt?: string;
  edited?: boolean;
}

export interface Status {
  version: number | null;
  dirty: boolean;
  applied: StatusEntry[];
  pending: StatusEntry[];
}

/** Reads the state without taking the lock or creating anything. */
export async function status(c: Client, migrations: readonly Migration[]): Promise<Status> {
  const w = await where(c);
  const exists = async (name: string) => (await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [name])).rows[0].ok as boolean;
  const cur = (await exists(w.t)) ? await readCurrent(c, w) : { version: null, dirty: false };
  const hist = new Map<number, { checksum: string; applied_at: Date }>();
  if (await exists(w.h)) {
    for (const r of (await c.query(`SELECT version, checksum, applied_at FROM ${w.h}`)).rows) hist.set(Number(r.version), r);
  }
  const applied: StatusEntry[] = [];
  const pending: StatusEntry[] = [];
  for (const m of migrations) {
    const e: StatusEntry = { version: m.version, name: m.name, file: m.up.file };
    if (cur.version !== null && m.version <= cur.version) {
      const h = hist.get(m.version);
      if (h) {
        e.appliedAt = new Date(h.applied_at).toISOString();
        e.edited = h.checksum !== m.up.checksum;
      }
      applied.push(e);
    } else pending.push(e);
  }
  return { version: cur.version, dirty: cur.dirty, applied, pending };
}

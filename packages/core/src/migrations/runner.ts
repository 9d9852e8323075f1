import path from 'node:path';
import type { Client, ClientConfig, QueryResult } from 'pg';
import type { Ctx } from '../context.ts';
import type { Config } from '../config.ts';
import { UserError } from '../errors.ts';
import { ident } from '../pg.ts';
import { advisoryLockKey } from './lock.ts';
import { checkFiles, indexOfPosition, lineAt, lineOf, needsOwnTransaction, splitStatements, type Migration, type MigrationFile } from './files.ts';

export type Command =
  | { kind: 'up'; n?: number }
  | { kind: 'down'; n: number | 'all' }
  | { kind: 'goto'; version: number }
  | { kind: 'force'; version: number };

export interface Step {
  version: number;
  name: string;
  file: string;
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

/** The summary line: golang-migrate's `no change` when there was nothing to do, else what moved and how long it took. */
export function describe(r: MigrateResult): string {
  if (!r.steps.length && r.from === r.to) return 'no change';
  const v = (x: number | null) => (x === null ? 'none' : String(x));
  const took = r.ms < 1000 ? `${Math.round(r.ms)} ms` : `${(r.ms / 1000).toFixed(2)} s`;
  const dir = r.steps[0]?.direction === 'down' ? 'rolled back' : 'applied';
  return r.steps.length
    ? `${dir} ${r.steps.length} migration${r.steps.length === 1 ? '' : 's'} in ${took} (version ${v(r.from)} -> ${v(r.to)})`
    : `version ${v(r.from)} -> ${v(r.to)}`;
}

/** golang-migrate's table, byte for byte; it holds at most one row. */
export const VERSION_TABLE = 'schema_migrations';
/** Ours, beside it (golang-migrate ignores other tables): what was applied, when, by whom, from which file. */
export const HISTORY_TABLE = 'schema_migrations_history';

const VERSION_DDL = '(version bigint not null primary key, dirty boolean not null)';
const HISTORY_DDL = `(version bigint primary key, name text not null, checksum text not null,
  applied_at timestamptz not null default now(), duration_ms integer not null, applied_by text not null default current_user)`;

interface Where {
  schema: string;
  /** This session's backend, for the lock watch. */
  pid: number;
  key: number;
  /** Quoted names of the two tables, in current_schema() as golang-migrate puts its table. */
  t: string;
  h: string;
  hasT: boolean;
  hasH: boolean;
}

function last(res: QueryResult | QueryResult[]): QueryResult {
  return Array.isArray(res) ? res[res.length - 1] : res;
}

async function where(c: Client, prelude = ''): Promise<Where> {
  const regclass = (table: string) => `to_regclass(format('%I.%I', current_schema(), '${table}')) IS NOT NULL`;
  const res = await c.query(`${prelude}SELECT current_schema() AS schema, current_database() AS db, pg_backend_pid() AS pid,
    CASE WHEN current_schema() IS NOT NULL THEN ${regclass(VERSION_TABLE)} END AS has_t,
    CASE WHEN current_schema() IS NOT NULL THEN ${regclass(HISTORY_TABLE)} END AS has_h`);
  const r = last(res as unknown as QueryResult | QueryResult[]).rows[0];
  if (!r.schema) {
    throw new UserError('there is no schema to keep schema_migrations in: search_path names no schema that exists', 'check SHOW search_path for the migration role');
  }
  return {
    schema: r.schema,
    pid: r.pid,
    // golang-migrate's CLI passes the URL's path, with its slash.
    key: advisoryLockKey('/' + r.db, r.schema, VERSION_TABLE),
    t: `${ident(r.schema)}.${ident(VERSION_TABLE)}`,
    h: `${ident(r.schema)}.${ident(HISTORY_TABLE)}`,
    hasT: r.has_t === true,
    hasH: r.has_h === true,
  };
}

/** Who holds the migration lock, in words, for the timeout message (never the text of their query). */
async function lockHolder(c: Client, key: number): Promise<string> {
  const { rows } = await c.query(
    `SELECT a.pid, a.application_name AS app, a.usename AS usr, a.client_addr AS addr, a.backend_start AS since,
            a.state, a.state_change AS state_since
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1::bigint::oid AND l.objsubid = 1`,
    [key],
  );
  if (!rows.length) return 'a session that has ended since';
  const r = rows[0];
  const iso = (d: Date) => new Date(d).toISOString();
  // Another role's connection time and state are hidden unless we are in pg_read_all_stats; our own
  // runners say since when they hold the lock in their application name, which everyone sees.
  const when = r.since ? `, connected since ${iso(r.since)}, ${r.state} since ${iso(r.state_since)}` : '';
  return `pid ${r.pid}, application "${r.app || ''}", user ${r.usr}${r.addr ? ` from ${r.addr}` : ''}${when}`;
}

/** What a runner holding the lock calls itself: the time it took the lock, for whoever waits. */
function holderName(now: Date): string {
  return `pg-deploy migrate, lock held since ${now.toISOString().slice(0, 19)}Z`;
}

/**
 * Takes golang-migrate's advisory lock (the session-level one, on the same key), waiting at most
 * `timeoutMs`; never hangs. It polls pg_try_advisory_lock instead of blocking in pg_advisory_lock:
 * a blocked waiter sits in a statement with a snapshot, CREATE INDEX CONCURRENTLY in the holder's
 * migration waits for every such snapshot, and PostgreSQL's deadlock detector then kills one side
 * (seen here: the holder's migration, leaving the database dirty). Between polls a waiter is idle,
 * outside any transaction, so the holder never waits for it.
 */
export async function acquireLock(c: Client, w: Where, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
    const { rows } = await c.query(`SELECT pg_try_advisory_lock(${w.key}) AS ok`);
    if (rows[0].ok) return;
    const left = deadline - Date.now();
    if (left <= 0) break;
    await new Promise((r) => setTimeout(r, Math.min(pause, left)));
  }
  throw new UserError(
    `another migration has held the migration lock (key ${w.key}) for more than ${timeoutMs / 1000}s: ${await lockHolder(c, w.key)}`,
    'wait for it to finish, or end that session (SELECT pg_terminate_backend(pid)); raise DB_MIGRATE_LOCK_TIMEOUT to wait longer',
  );
}

/**
 * How a migration waits for the locks its statements take. PostgreSQL queues a lock request behind
 * the sessions that hold a conflicting lock, and every later request behind it: an ALTER TABLE
 * waiting for a long transaction blocks every reader of that table for as long as it waits (the
 * server's lock_timeout is 60 s). So the runner gives the statements of each transactional file a
 * short lock_timeout of their own; a file that runs out of it is rolled back whole (nothing of it
 * was applied), the queue behind it moves on, and the file is tried again after a pause, a bounded
 * number of times. Files that run outside a transaction (CREATE INDEX CONCURRENTLY...) keep the
 * server's lock_timeout and are not retried: CONCURRENTLY waits for every older transaction to end,
 * which blocks no reader, and stopping it part-way leaves an invalid index and a dirty database.
 */
export interface LockPolicy {
  /** lock_timeout for the statements of transactional files, ms; 0: the server's, and no retries. */
  timeoutMs: number;
  /** Tries after the first, for a file that ran out of lock_timeout. */
  retries: number;
}

export const DEFAULT_LOCK_POLICY: LockPolicy = { timeoutMs: 3000, retries: 3 };

/** SQLSTATE lock_not_available: lock_timeout ran out (or a NOWAIT found the lock taken). */
const isLockTimeout = (e: unknown) => (e as { code?: string }).code === '55P03';

/** The pause before try `attempt + 1`: 0.5 s, 1 s, 2 s... at most 5 s. */
const backoffMs = (attempt: number) => Math.min(500 * 2 ** (attempt - 1), 5000);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Blocked {
  /** The lock this session waits for: mode and relation (or lock type). */
  wants?: string;
  holders: string[];
}

/** A session in words: pid, application, user, state and when its query and transaction started (when this role may see them). */
function sessionWords(r: { pid: number; app?: string; usr?: string; addr?: string; state?: string; query_start?: Date; xact_start?: Date }, viewer: string): string {
  const iso = (d: Date) => new Date(d).toISOString();
  const head = `pid ${r.pid}, application "${r.app || ''}", user ${r.usr}${r.addr ? ` from ${r.addr}` : ''}`;
  if (r.state == null) return `${head} (its state and query start are hidden from ${viewer}, which is not in pg_read_all_stats)`;
  return `${head}, state ${r.state}${r.query_start ? `, query started ${iso(r.query_start)}` : ''}${r.xact_start ? `, transaction started ${iso(r.xact_start)}` : ''}`;
}

/**
 * Who blocks the runner's session, seen from a second session: pg_blocking_pids answers only while
 * the waiter waits, and once lock_timeout has run out nobody waits any more. The second session is
 * opened only when a file has run for a quarter of the lock timeout (a quick file costs nothing),
 * once per run, and asks every 200 ms until the file returns. It logs in as the runner does (same role,
 * server, TLS settings), under its own application name.
 */
class LockWatch {
  #client?: Promise<Client | undefined>;
  last?: Blocked;
  constructor(private readonly c: Client, private readonly pid: number) {}

  async during<T>(delayMs: number, work: Promise<T>): Promise<T> {
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const pause = (ms: number) => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([new Promise<void>((r) => (timer = setTimeout(r, ms))), stopped]).finally(() => clearTimeout(timer));
    };
    let done = false;
    const poll = (async () => {
      await pause(delayMs);
      const w = done ? undefined : await this.open();
      while (!done && w) {
        const b = await this.blockers(w).catch(() => undefined);
        if (b?.holders.length) this.last = b;
        await pause(200);
      }
    })();
    try {
      return await work;
    } finally {
      done = true;
      stop();
      await poll;
    }
  }

  private open(): Promise<Client | undefined> {
    const c = this.c as Client & { password?: string; ssl?: ClientConfig['ssl'] };
    this.#client ??= (async () => {
      const Ctor = c.constructor as new (cfg: ClientConfig) => Client;
      const w = new Ctor({
        host: c.host, port: c.port, user: c.user, database: c.database, password: c.password, ssl: c.ssl,
        application_name: 'pg-deploy lock watch', connectionTimeoutMillis: 5000,
      });
      w.on('error', () => {});
      await w.connect();
      return w;
    })().catch(() => undefined); // no watch, then: the message says the holder could not be seen
    return this.#client;
  }

  private async blockers(w: Client): Promise<Blocked> {
    const { rows } = await w.query(
      `SELECT (SELECT format('%s on %s', l.mode, CASE WHEN l.relation IS NOT NULL AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                                   THEN l.relation::regclass::text ELSE l.locktype END)
                 FROM pg_locks l WHERE l.pid = $1 AND NOT l.granted LIMIT 1) AS wants,
              b.pid, b.application_name AS app, b.usename AS usr, b.client_addr AS addr, b.state, b.query_start, b.xact_start
         FROM unnest(pg_blocking_pids($1)) AS x(pid) JOIN pg_stat_activity b ON b.pid = x.pid`,
      [this.pid],
    );
    return { wants: rows[0]?.wants ?? undefined, holders: rows.map((r) => sessionWords(r, w.user ?? 'this role')) };
  }

  async close(): Promise<void> {
    const w = await this.#client;
    await w?.end().catch(() => {});
  }
}

/** What a runner needs to wait for locks: the policy, the watch, somewhere to say it tries again. */
interface Locks {
  policy: LockPolicy;
  watch?: LockWatch;
  log: Pick<Ctx['log'], 'warn'>;
}

/** Runs a transactional file's text, watched for whoever blocks it once it has run for a quarter of the lock timeout. */
function runWatched(c: Client, lk: Locks, sql: string): Promise<unknown> {
  const q = c.query(sql);
  return lk.watch ? lk.watch.during(Math.min(lk.policy.timeoutMs / 4, 1000), q) : q;
}

/** Says that a file is tried again, and waits before it. */
async function pauseBeforeRetry(lk: Locks, file: string, attempt: number): Promise<void> {
  const ms = backoffMs(attempt);
  const b = lk.watch?.last;
  lk.log.warn(
    `${file} waited more than ${lk.policy.timeoutMs / 1000}s for a lock${b?.wants ? ` (${b.wants})` : ''}${b?.holders.length ? ` held by ${b.holders.join('; ')}` : ''}; ` +
      `rolled back, trying again in ${ms / 1000}s (try ${attempt + 1} of ${lk.policy.retries + 1})`,
  );
  await sleep(ms);
}

/** The message when a file has run out of lock_timeout on every try: what it waited for, and who held it. */
function lockGiveUp(f: MigrationFile, lk: Locks, nothing: string): UserError {
  const b = lk.watch?.last;
  const who = b?.holders.length ? `held by ${b.holders.join('; ')}` : 'held by a session that could not be seen (it let go in the meantime, or the watch could not connect)';
  const pid = b?.holders.length ? /^pid (\d+)/.exec(b.holders[0])![1] : 'pid';
  return new UserError(
    `${f.file}: waited more than ${lk.policy.timeoutMs / 1000}s for a lock${b?.wants ? ` (${b.wants})` : ''} on each of ${lk.policy.retries + 1} tries, ${who}`,
    `${nothing}. Let that session finish or end it (SELECT pg_terminate_backend(${pid})), then run the command again; ` +
      'DB_MIGRATE_STATEMENT_LOCK_TIMEOUT and DB_MIGRATE_STATEMENT_LOCK_RETRIES set how long and how often a migration waits',
  );
}

export interface Current {
  version: number | null;
  dirty: boolean;
}

/** The one row; golang-migrate writes (-1, dirty) for a failed roll-back of the first migration. */
async function readCurrent(c: Client, w: Where, prelude = ''): Promise<Current> {
  const res = await c.query(`${prelude}SELECT version, dirty FROM ${w.t} LIMIT 1`);
  const { rows } = last(res as unknown as QueryResult | QueryResult[]);
  if (!rows.length) return { version: null, dirty: false };
  const v = Number(rows[0].version);
  return { version: v < 0 ? null : v, dirty: rows[0].dirty };
}

/**
 * The single-row rewrite, as statements for the caller's transaction. golang-migrate uses TRUNCATE;
 * DELETE leaves the same one row and lets `db:status` read the old row meanwhile instead of waiting
 * behind TRUNCATE's exclusive lock. Versions are numbers we parsed, safe to inline.
 */
function setVersionSql(w: Where, version: number | null, dirty: boolean): string {
  const del = `DELETE FROM ${w.t}`;
  if (version === null && !dirty) return del;
  return `${del}; INSERT INTO ${w.t} (version, dirty) VALUES (${version ?? -1}, ${dirty})`;
}

function historySql(c: Client, w: Where, m: Migration, dir: 'up' | 'down', ms: number): string {
  if (dir === 'down') return `DELETE FROM ${w.h} WHERE version = ${m.version}`;
  return `INSERT INTO ${w.h} (version, name, checksum, duration_ms) VALUES (${m.version}, ${c.escapeLiteral(m.name)}, ${c.escapeLiteral(m.up.checksum)}, ${Math.round(ms)})
    ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, applied_at = now(), duration_ms = EXCLUDED.duration_ms, applied_by = current_user`;
}

const forceCmd = (v: number | null) => (v === null || v < 0 ? 'pnpm db:migrate:force -- -1' : `pnpm db:migrate:force ${v}`);
const vName = (v: number | null) => (v === null ? 'none' : String(v));

/** Names of the relations an up file creates, to tell whether an interrupted file looks applied. */
function createdRelations(sql: string): string[] {
  const out: string[] = [];
  const re = /\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|MATERIALIZED\s+VIEW|SEQUENCE)\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?!ON\b)("[^"]+"|[\w$]+)(?:\.("[^"]+"|[\w$]+))?/gi;
  for (const m of sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, ' ').matchAll(re)) out.push(m[2] ? `${m[1]}.${m[2]}` : m[1]);
  return out;
}

type Looks = { state: 'applied' | 'not applied' | 'partly applied' | 'unknown'; invalid: string[]; present: string[]; missing: string[] };

async function looks(c: Client, m: Migration | undefined): Promise<Looks> {
  const out: Looks = { state: 'unknown', invalid: [], present: [], missing: [] };
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
  out.state = out.invalid.length ? 'partly applied' : !out.missing.length ? 'applied' : !out.present.length ? 'not applied' : 'partly applied';
  return out;
}

/** Where the hint's command finds the migration role's password and the CA: the configured folders, shown from the project root. */
export interface HintPaths {
  root: string;
  secretsDir: string;
  sslDir: string;
}

const DEFAULT_PATHS: HintPaths = { root: '', secretsDir: 'database/infra/secrets', sslDir: 'database/infra/ssl' };

/** A word for a POSIX shell: as it is when it is plain, else in single quotes. */
function shq(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Who runs a statement on an object migrations made, and how: the migration role owns them, while
 * `pnpm db:psql` logs in as the application role, which PostgreSQL answers with "must be owner".
 * `c` is the migration role's session: its own user, database, host and port.
 */
function asOwner(c: Client, sql: string, paths: HintPaths = DEFAULT_PATHS): string {
  const shown = (p: string) => {
    const rel = paths.root ? path.relative(paths.root, p) : p;
    return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
  };
  const v = (x: string | number) => (/^[\w./-]+$/.test(String(x)) ? String(x) : `'${String(x).replace(/[\\']/g, '\\$&')}'`);
  const tls = c.host.startsWith('/') ? '' : ` sslmode=verify-full sslrootcert=${v(shown(path.join(paths.sslDir, 'ca.crt')))}`;
  const conninfo = `host=${v(c.host)} port=${c.port} dbname=${v(c.database ?? '')} user=${v(c.user ?? '')}${tls}`;
  // psql asks for the password: a PGPASSWORD=... in the hint would be redacted as a secret, rightly
  // (and so would any "password:" followed by a word).
  return (
    `run the DROP as ${c.user}, the migration role, which owns the index (pnpm db:psql logs in as the application role, which gets "must be owner"; ` +
    `psql asks for the password in ${shown(path.join(paths.secretsDir, 'migrate_password'))}): psql ${shq(conninfo)} -c ${shq(sql)}`
  );
}

/**
 * The truth about a dirty database, as golang-migrate words it, then which file stopped part-way
 * (our history tells an interrupted roll-back from an interrupted apply), whether its objects exist,
 * and the exact way out.
 */
async function dirtyError(c: Client, w: Where, version: number | null, migrations: readonly Migration[], paths?: HintPaths): Promise<UserError> {
  const head = `Dirty database version ${version ?? -1}. Fix and force version.`;
  const idx = version === null ? -1 : migrations.findIndex((m) => m.version === version);
  const next = migrations.find((m) => version === null || m.version > version);
  // golang-migrate marks a failed roll-back of the first migration as (-1, dirty): nothing else
  // writes that row.
  let rollingBack = version === null && next !== undefined;
  if (!rollingBack && next && w.hasH) {
    const { rows } = await c.query(`SELECT 1 FROM ${w.h} WHERE version = $1`, [next.version]);
    // A roll-back of `next` runs on top of the version's own objects. When those are missing, the
    // row is stale: golang-migrate rolled `next` back (it keeps no history), then the version's own
    // up failed.
    rollingBack = rows.length > 0 && (idx < 0 || (await looks(c, migrations[idx])).state !== 'not applied');
  }
  const lines: string[] = [];
  let hint: string;
  if (rollingBack) {
    const l = await looks(c, next);
    lines.push(`${next!.down.file} (rolling back to ${vName(version)}) stopped part-way; the objects its up file creates look ${l.state === 'applied' ? 'still present' : l.state === 'not applied' ? 'gone' : l.state}`);
    hint =
      l.state === 'applied' ? `if the roll-back did nothing: ${forceCmd(next!.version)}` :
      l.state === 'not applied' ? `if the roll-back completed: ${forceCmd(version)}` :
      `finish ${next!.down.file} by hand, then ${forceCmd(version)}; or undo what it did, then ${forceCmd(next!.version)}`;
  } else if (idx < 0) {
    lines.push(`no migration file has version ${vName(version)}`);
    hint = `restore the file, or force a version that exists: ${forceCmd(migrations.at(-1)?.version ?? null)}`;
  } else {
    const m = migrations[idx];
    const prev = idx > 0 ? migrations[idx - 1].version : null;
    const l = await looks(c, m);
    const detail = l.invalid.length ? `; INVALID (interrupted CREATE INDEX CONCURRENTLY): ${l.invalid.join(', ')}` : l.state === 'partly applied' ? `; present: ${l.present.join(', ')}; missing: ${l.missing.join(', ')}` : '';
    lines.push(`${m.up.file} stopped part-way; its objects look ${l.state}${detail}`);
    hint =
      l.state === 'applied' ? `if the file completed: ${forceCmd(m.version)}` :
      l.state === 'not applied' ? `nothing of it is there: ${forceCmd(prev)}, then pnpm db:migrate` :
      l.invalid.length ? `drop the invalid index (DROP INDEX CONCURRENTLY ${l.invalid.join(', ')}), then ${forceCmd(prev)}, then pnpm db:migrate; ${asOwner(c, `DROP INDEX CONCURRENTLY ${l.invalid.join(', ')}`, paths)}` :
      `check what ${m.up.file} did: if it completed, ${forceCmd(m.version)}; if not, undo it, then ${forceCmd(prev)} and pnpm db:migrate`;
  }
  return new UserError(`${head}\n  ${lines.join('\n  ')}`, hint);
}

/**
 * The line of a file's error: PostgreSQL's position when it gives one; else the statement's first
 * line when the file holds one statement; else, for a transactional file (`replay`), the file is run
 * again one statement at a time in a transaction that is always rolled back, to find which one
 * raises the same error (constraint violations, division by zero... come without a position).
 * Only for files that failed quickly, so a slow data migration never runs twice for a line number.
 */
async function errorLine(c: Client, sql: string, e: unknown, replay: boolean, elapsedMs: number): Promise<number | undefined> {
  const { code, position } = e as { code?: string; position?: string };
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
        const err = e as { code?: string; position?: string };
        if (err.code !== code) return undefined;
        return err.position ? lineAt(sql, s.offset + indexOfPosition(s.text, Number(err.position))) : lineAt(sql, s.start);
      }
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    await c.query('ROLLBACK').catch(() => {});
  }
}

function fileMessage(f: MigrationFile, e: unknown, line: number | undefined): string {
  const err = e as { message?: string; detail?: string };
  return `${f.file}${line ? `:${line}` : ''}: ${err.message ?? String(e)}${err.detail ? ` (${err.detail})` : ''}`;
}

interface PlannedStep {
  m: Migration;
  dir: 'up' | 'down';
  /** The version once this step is done. */
  after: number | null;
}

const fileOf = (s: PlannedStep) => (s.dir === 'up' ? s.m.up : s.m.down);

/** The migrations to run, in order, to carry out `cmd` from `current`. */
export function plan(migrations: readonly Migration[], current: number | null, cmd: Exclude<Command, { kind: 'force' }>): PlannedStep[] {
  const idx = current === null ? -1 : migrations.findIndex((m) => m.version === current);
  if (current !== null && idx < 0 && cmd.kind !== 'up') {
    throw new UserError(`the database is at version ${current}, which has no migration file`, `restore the missing files, or force a version that exists: ${forceCmd(migrations.at(-1)?.version ?? null)}`);
  }
  const pending = migrations.filter((m) => current === null || m.version > current);
  const ups = (list: readonly Migration[]) => list.map((m) => ({ m, dir: 'up' as const, after: m.version }));
  const downs = (count: number) => {
    const out: PlannedStep[] = [];
    for (let i = idx; i >= 0 && out.length < count; i--) out.push({ m: migrations[i], dir: 'down', after: i > 0 ? migrations[i - 1].version : null });
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
 * Runs the steps, each file with its bookkeeping in one transaction where PostgreSQL allows it.
 * Round trips are what a thousand migrations cost, so our own statements travel together: the
 * bookkeeping, the COMMIT and the next BEGIN go in one query. The file itself always goes alone,
 * as golang-migrate sends it (one Exec), so its statements, its implicit transaction and its error
 * positions are exactly PostgreSQL's.
 */
async function runSteps(
  ctx: Pick<Ctx, 'log' | 'clock'>,
  c: Client,
  w: Where,
  migrations: readonly Migration[],
  from: number | null,
  todo: readonly PlannedStep[],
  lk: Locks,
  paths?: HintPaths,
): Promise<Step[]> {
  const now = () => ctx.clock().getTime();
  const tx = todo.map((s) => !needsOwnTransaction(fileOf(s).sql));
  const steps: Step[] = [];
  const bar = ctx.log.spinner(todo[0]?.dir === 'down' ? 'rolling back' : 'migrating');
  let open = false; // a transaction is open, begun for this step by the previous query
  try {
    for (const [i, s] of todo.entries()) {
      const f = fileOf(s);
      const before = i === 0 ? from : todo[i - 1].after;
      const hasNext = i + 1 < todo.length;
      const nextTx = hasNext && tx[i + 1];
      bar.update(i + 1, todo.length, f.file);
      let start = now();
      if (tx[i]) {
        for (let attempt = 1; ; attempt++) {
          if (!open) await c.query('BEGIN');
          open = false;
          start = now();
          try {
            await runWatched(c, lk, f.sql);
            break;
          } catch (e) {
            const elapsed = now() - start;
            await c.query('ROLLBACK').catch(() => {});
            if (isLockTimeout(e) && lk.policy.timeoutMs > 0) {
              if (attempt <= lk.policy.retries) {
                await pauseBeforeRetry(lk, f.file, attempt);
                continue;
              }
              await flush(c, w, i, tx, before);
              throw lockGiveUp(f, lk, `nothing of ${f.file} was applied (it ran in a transaction, rolled back each time); the version is still ${vName(before)}, not dirty`);
            }
            await flush(c, w, i, tx, before);
            throw await txFailure(c, f, e, elapsed, before);
          }
        }
        // Each commit but the last is asynchronous: the last one (or the next file's synchronous
        // dirty mark) flushes the WAL of all of them, so a successful run is durable as a whole,
        // and a crash mid-run can only lose whole migrations with their version rows.
        const tail = hasNext ? `SET LOCAL synchronous_commit = off; COMMIT${nextTx ? '; BEGIN' : ''}` : 'COMMIT';
        try {
          await c.query(`${setVersionSql(w, s.after, false)}; ${historySql(c, w, s.m, s.dir, now() - start)}; ${tail}`);
        } catch (e) {
          // Deferred constraints are checked at COMMIT: the file's failure, not ours.
          await c.query('ROLLBACK').catch(() => {});
          await flush(c, w, i, tx, before);
          throw await txFailure(c, f, e, Infinity, before);
        }
        open = nextTx;
      } else {
        // golang-migrate's protocol: mark dirty (at the version being moved to, as it does), run,
        // mark clean. A failure here leaves it dirty, on purpose: nobody knows what the file did.
        // The file waits for locks as long as the server says (see LockPolicy).
        await c.query(`${lk.policy.timeoutMs > 0 ? 'RESET lock_timeout; ' : ''}BEGIN; ${setVersionSql(w, s.after, true)}; COMMIT`);
        try {
          await c.query(f.sql);
        } catch (e) {
          await c.query('ROLLBACK').catch(() => {}); // a file that manages its own transactions may have left one failed
          const line = await errorLine(c, f.sql, e, false, 0);
          const dirty = await dirtyError(c, w, s.after, migrations, paths).catch(() => undefined);
          const alone = (e as { code?: string }).code === '25001' ? ' (it must be the only statement in its file)' : '';
          throw new UserError(
            `${fileMessage(f, e, line)}${alone}\n${f.file} runs outside a transaction, so the database is left dirty at version ${s.after ?? -1}, as golang-migrate leaves it` +
              (dirty ? `\n${dirty.message}` : ''),
            dirty?.hint,
          );
        }
        await c.query(`${lockTimeoutSql(lk.policy)}BEGIN; ${setVersionSql(w, s.after, false)}; ${historySql(c, w, s.m, s.dir, now() - start)}; COMMIT${nextTx ? '; BEGIN' : ''}`);
        open = nextTx;
      }
      steps.push({ version: s.m.version, name: s.m.name, file: f.file, direction: s.dir, ms: now() - start, transactional: tx[i] });
    }
  } finally {
    if (open) await c.query('ROLLBACK').catch(() => {});
    bar.end();
  }
  return steps;
}

/**
 * `--single-transaction`: the whole run in one transaction, as `psql -1` or node-pg-migrate's
 * default: a failure anywhere leaves the schema and the version as they were before the run, and
 * the run pays one WAL flush instead of one per file (a transaction that drops a table always
 * flushes at commit, whatever synchronous_commit says). What it costs, and why it is not the
 * default: every lock the files take is held until the last file is done, so the tables they touch
 * stay blocked for the whole run, not for one file; and PostgreSQL refuses some sequences in one
 * transaction that work apart (a value added with ALTER TYPE ... ADD VALUE cannot be used before
 * it commits). A file that cannot run in a transaction at all refuses the mode before anything runs.
 */
async function runAsOne(ctx: Pick<Ctx, 'log' | 'clock'>, c: Client, w: Where, from: number | null, todo: readonly PlannedStep[], lk: Locks): Promise<Step[]> {
  const own = todo.map(fileOf).find((f) => needsOwnTransaction(f.sql));
  if (own) {
    throw new UserError(
      `--single-transaction: ${own.file} cannot run inside a transaction block (CONCURRENTLY, VACUUM, its own BEGIN/COMMIT...); nothing was applied`,
      'run without --single-transaction, or apply the migrations before it first (pnpm db:migrate up N)',
    );
  }
  const now = () => ctx.clock().getTime();
  const nothing = `nothing of this run was applied (one transaction, rolled back); the version is still ${vName(from)}, not dirty`;
  // Every table a file touches stays locked until the end: a long run can fill the lock table.
  const tooManyLocks = (e: unknown) =>
    (e as { code?: string }).code === '53200'
      ? new UserError(`${(e as Error).message}: this run takes more locks than one transaction may hold (max_locks_per_transaction)`, `${nothing}; run without --single-transaction, or in parts (pnpm db:migrate up N)`)
      : undefined;
  // A file that runs out of lock_timeout rolls the whole run back: the whole run is tried again.
  for (let attempt = 1; ; attempt++) {
    const steps: Step[] = [];
    const bar = ctx.log.spinner(todo[0].dir === 'down' ? 'rolling back (one transaction)' : 'migrating (one transaction)');
    let retry: MigrationFile | undefined;
    try {
      await c.query('BEGIN');
      for (const [i, s] of todo.entries()) {
        const f = fileOf(s);
        bar.update(i + 1, todo.length, f.file);
        const start = now();
        try {
          await runWatched(c, lk, f.sql);
          await c.query(historySql(c, w, s.m, s.dir, now() - start));
        } catch (e) {
          await c.query('ROLLBACK').catch(() => {});
          if (isLockTimeout(e) && lk.policy.timeoutMs > 0) {
            if (attempt > lk.policy.retries) throw lockGiveUp(f, lk, nothing);
            retry = f;
            break;
          }
          // Replaying the file alone to find its line is only faithful for the first one: the others
          // ran on top of files now rolled back.
          throw tooManyLocks(e) ?? (await txFailure(c, f, e, i === 0 ? now() - start : Infinity, from, nothing));
        }
        steps.push({ version: s.m.version, name: s.m.name, file: f.file, direction: s.dir, ms: now() - start, transactional: true });
      }
      if (!retry) {
        try {
          await c.query(`${setVersionSql(w, todo[todo.length - 1].after, false)}; COMMIT`);
        } catch (e) {
          await c.query('ROLLBACK').catch(() => {});
          if (!(e as { code?: string }).code) throw e;
          throw tooManyLocks(e) ?? new UserError(`the run failed at COMMIT (a deferred constraint?): ${(e as Error).message}`, nothing);
        }
        return steps;
      }
    } finally {
      bar.end();
    }
    await pauseBeforeRetry(lk, retry.file, attempt);
  }
}

/**
 * After a failure, makes the migrations this run committed asynchronously durable before saying
 * they were applied: rewriting the row to the version reached, synchronously, flushes the WAL
 * before it. (A commit that writes nothing would not flush.)
 */
async function flush(c: Client, w: Where, i: number, tx: readonly boolean[], reached: number | null): Promise<void> {
  if (i === 0 || !tx[i - 1]) return;
  await c.query(`BEGIN; ${setVersionSql(w, reached, false)}; COMMIT`).catch(() => {});
}

async function txFailure(c: Client, f: MigrationFile, e: unknown, elapsedMs: number, before: number | null, nothing?: string): Promise<UserError> {
  const err = e as { code?: string; position?: string };
  if (!err.code) return e as UserError; // not PostgreSQL's answer (a lost connection): let it surface as it is
  const line = await errorLine(c, f.sql, e, true, elapsedMs);
  return new UserError(
    fileMessage(f, e, line),
    `${nothing ?? `nothing of ${f.file} was applied (it ran in a transaction, rolled back); the version is still ${vName(before)}, not dirty`}. Fix the file and run the command again`,
  );
}

export interface MigrateOptions {
  /** How long to wait for another runner's advisory lock. */
  lockTimeoutMs: number;
  /** How each file waits for table locks (see LockPolicy): ctx.cfg's settings, else DEFAULT_LOCK_POLICY. */
  locks?: LockPolicy;
  /**
   * Every file of the run and its bookkeeping in one transaction: all or nothing. Off by default:
   * see runAsOne for what it costs.
   */
  singleTransaction?: boolean;
}

/**
 * Runs a migration command under golang-migrate's lock, on golang-migrate's table. Refuses a dirty
 * database (with the truth about it) unless the command is `force`.
 */
export async function migrate(
  ctx: Pick<Ctx, 'log' | 'clock'> & { cfg?: Pick<Config, 'statementLockTimeoutMs' | 'statementLockRetries' | 'root' | 'secretsDir' | 'sslDir'> },
  c: Client,
  migrations: readonly Migration[],
  cmd: Command,
  opts: MigrateOptions,
): Promise<MigrateResult> {
  const t0 = ctx.clock().getTime();
  const done = (from: number | null, to: number | null, steps: Step[]) => ({ from, to, steps, ms: ctx.clock().getTime() - t0 });
  const policy = opts.locks ?? (ctx.cfg ? { timeoutMs: ctx.cfg.statementLockTimeoutMs, retries: ctx.cfg.statementLockRetries } : DEFAULT_LOCK_POLICY);
  // A runner killed mid-statement leaves its backend running that statement, and holding the lock,
  // until the statement ends; checking the client socket every second ends it (and frees the lock)
  // soon after the client is gone.
  const w = await where(c, `SET client_connection_check_interval = 1000; ${lockTimeoutSql(policy)}`);
  const lk: Locks = { policy, log: ctx.log, watch: policy.timeoutMs > 0 ? new LockWatch(c, w.pid) : undefined };
  try {
    return await underLock(ctx, c, w, migrations, cmd, opts, lk, done);
  } finally {
    await lk.watch?.close();
  }
}

/** The session's lock_timeout for the runner's transactional work, or nothing when the server's applies. */
function lockTimeoutSql(p: LockPolicy): string {
  return p.timeoutMs > 0 ? `SET lock_timeout = ${Math.round(p.timeoutMs)}; ` : '';
}

/** The command itself, once the session is set up: the advisory lock, the dirty check, the steps. */
async function underLock(
  ctx: Pick<Ctx, 'log' | 'clock'> & { cfg?: HintPaths },
  c: Client,
  w: Where,
  migrations: readonly Migration[],
  cmd: Command,
  opts: MigrateOptions,
  lk: Locks,
  done: (from: number | null, to: number | null, steps: Step[]) => MigrateResult,
): Promise<MigrateResult> {
  const paths = ctx.cfg;

  // Nothing to do is the common case: the committed row says so without taking the lock. Only a
  // clean row is trusted: a dirty one may be another runner's work in progress, so it is re-read
  // under the lock.
  if (cmd.kind !== 'force' && w.hasT) {
    const cur = await readCurrent(c, w);
    if (!cur.dirty) {
      let todo: PlannedStep[] | undefined;
      try {
        todo = plan(migrations, cur.version, cmd);
      } catch {
        todo = undefined; // decided again, and reported, under the lock
      }
      if (todo?.length === 0) return done(cur.version, cur.version, []);
    }
  }

  await acquireLock(c, w, opts.lockTimeoutMs);
  try {
    const creates = [
      ...(w.hasT ? [] : [`CREATE TABLE IF NOT EXISTS ${w.t} ${VERSION_DDL}; `]),
      ...(w.hasH ? [] : [`CREATE TABLE IF NOT EXISTS ${w.h} ${HISTORY_DDL}; `]),
    ].join('');
    const cur = await readCurrent(c, w, `SET application_name = ${c.escapeLiteral(holderName(ctx.clock()))}; ${creates}`);
    const wh = { ...w, hasT: true, hasH: true };
    if (cmd.kind === 'force') {
      if (cmd.version !== -1 && !migrations.some((m) => m.version === cmd.version)) {
        throw new UserError(`no migration has version ${cmd.version}`, 'force a version that exists (or -1 for none); see: pnpm db:status');
      }
      const to = cmd.version === -1 ? null : cmd.version;
      // History lists what is applied: rows above the forced version no longer are.
      await c.query(`BEGIN; ${setVersionSql(wh, to, false)}; DELETE FROM ${wh.h} WHERE version > ${to ?? -1}; COMMIT`);
      return done(cur.version, to, []);
    }
    if (cur.dirty) throw await dirtyError(c, wh, cur.version, migrations, paths);
    const todo = plan(migrations, cur.version, cmd);
    checkFiles(todo.map(fileOf)); // the texts of what will run, before any of it does
    const steps = opts.singleTransaction && todo.length ? await runAsOne(ctx, c, wh, cur.version, todo, lk) : await runSteps(ctx, c, wh, migrations, cur.version, todo, lk, paths);
    return done(cur.version, todo.length ? todo[todo.length - 1].after : cur.version, steps);
  } finally {
    await c.query(`SELECT pg_advisory_unlock(${w.key})`).catch(() => {});
  }
}

export interface StatusEntry {
  version: number;
  name: string;
  file: string;
  appliedAt?: string;
  /** Applied, and the up file changed since. */
  edited?: boolean;
  /** The version the dirty flag is set at. */
  dirty?: boolean;
  /**
   * At or below the current version, yet never applied by this runner while later ones were: most
   * likely a file added after them (a merged branch). Neither runner will apply it.
   */
  unrecorded?: boolean;
}

export interface Status {
  version: number | null;
  dirty: boolean;
  applied: StatusEntry[];
  pending: StatusEntry[];
}

/**
 * For a dirty database, what `migrate` would say about it (which file stopped part-way, whether its
 * objects exist) and the exact way out; undefined when it is clean. Read without the lock, as
 * status is: on docker, golang-migrate prints only its own line, so `db:status` is where the fix is.
 */
export async function dirtyReport(c: Client, migrations: readonly Migration[], paths?: HintPaths): Promise<{ problem: string; fix: string } | undefined> {
  const w = await where(c);
  if (!w.hasT) return undefined;
  const cur = await readCurrent(c, w);
  if (!cur.dirty) return undefined;
  const e = await dirtyError(c, w, cur.version, migrations, paths);
  return { problem: e.message.split('\n').slice(1).map((l) => l.trim()).join('; '), fix: e.hint ?? '' };
}

/** Reads the state without taking the lock or creating anything. */
export async function status(c: Client, migrations: readonly Migration[]): Promise<Status> {
  const w = await where(c);
  const cur = w.hasT ? await readCurrent(c, w) : { version: null, dirty: false };
  const hist = new Map<number, { checksum: string; applied_at: Date }>();
  if (w.hasH) {
    for (const r of (await c.query(`SELECT version, checksum, applied_at FROM ${w.h}`)).rows) hist.set(Number(r.version), r);
  }
  const applied: StatusEntry[] = [];
  const pending: StatusEntry[] = [];
  // Versions another runner applied (golang-migrate, say) have no row and are not suspect, before
  // this runner's first recorded version or after its last: only gaps between recorded versions are.
  const recorded = [...hist.keys()];
  const firstRecorded = recorded.length ? Math.min(...recorded) : Infinity;
  const lastRecorded = recorded.length ? Math.max(...recorded) : -Infinity;
  for (const m of migrations) {
    const e: StatusEntry = { version: m.version, name: m.name, file: m.up.file };
    if (cur.version !== null && m.version <= cur.version) {
      const h = hist.get(m.version);
      if (h) {
        e.appliedAt = new Date(h.applied_at).toISOString();
        e.edited = h.checksum !== m.up.checksum;
      } else if (m.version > firstRecorded && m.version < lastRecorded && !(cur.dirty && m.version === cur.version)) {
        e.unrecorded = true;
      }
      if (cur.dirty && m.version === cur.version) e.dirty = true;
      applied.push(e);
    } else pending.push(e);
  }
  return { version: cur.version, dirty: cur.dirty, applied, pending };
}

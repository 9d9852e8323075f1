import type { Client } from 'pg';
import type { Ctx } from '../context.ts';
import type { Config } from '../config.ts';
import { checkFiles, type Migration } from './files.ts';
import { dirtyError, type HintPaths } from './diagnose.ts';
import { runAsOne, runSteps, type Step } from './execute.ts';
import { literal } from '../pg.ts';
import { acquireLock, holderName, lockKeyOf, releaseLock } from './lock.ts';
import { DEFAULT_LOCK_POLICY, LockWatch, lockTimeoutSql, type LockPolicy, type LockWait } from './lock-wait.ts';
import { fileOf, forceTarget, plan, type Command, type PlannedStep } from './plan.ts';
import { findTables, HISTORY_DDL, readCurrent, setVersionSql, VERSION_DDL, versionLabel, type MigrationTables } from './state.ts';

export interface MigrateResult {
  from: number | null;
  to: number | null;
  steps: Step[];
  ms: number;
}

/** The summary line: golang-migrate's `no change`, else what moved and how long it took. */
export function describe(r: MigrateResult): string {
  if (!r.steps.length && r.from === r.to) return 'no change';
  const took = r.ms < 1000 ? `${Math.round(r.ms)} ms` : `${(r.ms / 1000).toFixed(2)} s`;
  const dir = r.steps[0]?.direction === 'down' ? 'rolled back' : 'applied';
  return r.steps.length
    ? `${dir} ${r.steps.length} migration${r.steps.length === 1 ? '' : 's'} in ${took} (version ${versionLabel(r.from)} -> ${versionLabel(r.to)})`
    : `version ${versionLabel(r.from)} -> ${versionLabel(r.to)}`;
}

export interface MigrateOptions {
  lockTimeoutMs: number;
  locks?: LockPolicy; // default: ctx.cfg's, else DEFAULT_LOCK_POLICY
  singleTransaction?: boolean; // runAsOne
}

/** Runs a command under golang-migrate's lock, on its table; a dirty database is refused unless the command is `force`. */
export async function migrate(
  ctx: Pick<Ctx, 'log' | 'clock'> & {
    cfg?: Pick<Config, 'statementLockTimeoutMs' | 'statementLockRetries' | 'root' | 'secretsDir' | 'sslDir'>;
  },
  c: Client,
  migrations: readonly Migration[],
  cmd: Command,
  opts: MigrateOptions,
): Promise<MigrateResult> {
  const t0 = ctx.clock().getTime();
  const done = (from: number | null, to: number | null, steps: Step[]) => ({ from, to, steps, ms: ctx.clock().getTime() - t0 });
  const policy =
    opts.locks ?? (ctx.cfg ? { timeoutMs: ctx.cfg.statementLockTimeoutMs, retries: ctx.cfg.statementLockRetries } : DEFAULT_LOCK_POLICY);
  // A killed runner's backend ends (and frees the lock) within a second, not when its statement ends.
  const tables = await findTables(c, `SET client_connection_check_interval = 1000; ${lockTimeoutSql(policy)}`);
  const wait: LockWait = { policy, log: ctx.log, watch: policy.timeoutMs > 0 ? new LockWatch(c, tables.pid) : undefined };
  try {
    return await underLock(ctx, c, tables, migrations, cmd, opts, wait, done);
  } finally {
    await wait.watch?.close();
  }
}

async function underLock(
  ctx: Pick<Ctx, 'log' | 'clock'> & { cfg?: HintPaths },
  c: Client,
  tables: MigrationTables,
  migrations: readonly Migration[],
  cmd: Command,
  opts: MigrateOptions,
  wait: LockWait,
  done: (from: number | null, to: number | null, steps: Step[]) => MigrateResult,
): Promise<MigrateResult> {
  const paths = ctx.cfg;

  // Nothing to do, the common case, needs no lock; a dirty row may be another runner's, so it is re-read under the lock.
  if (cmd.kind !== 'force' && tables.hasVersionTable) {
    const cur = await readCurrent(c, tables);
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

  const key = lockKeyOf(tables);
  await acquireLock(c, key, opts.lockTimeoutMs);
  try {
    const creates = [
      ...(tables.hasVersionTable ? [] : [`CREATE TABLE IF NOT EXISTS ${tables.versionTable} ${VERSION_DDL}; `]),
      ...(tables.hasHistoryTable ? [] : [`CREATE TABLE IF NOT EXISTS ${tables.historyTable} ${HISTORY_DDL}; `]),
    ].join('');
    const cur = await readCurrent(c, tables, `SET application_name = ${literal(holderName(ctx.clock()))}; ${creates}`);
    const created = { ...tables, hasVersionTable: true, hasHistoryTable: true };
    if (cmd.kind === 'force') {
      const to = forceTarget(migrations, cmd.version);
      // History lists what is applied: rows above the forced version no longer are.
      await c.query(`BEGIN; ${setVersionSql(created, to, false)}; DELETE FROM ${created.historyTable} WHERE version > ${to ?? -1}; COMMIT`);
      return done(cur.version, to, []);
    }
    if (cur.dirty) throw await dirtyError(c, created, cur.version, migrations, paths);
    const todo = plan(migrations, cur.version, cmd);
    checkFiles(todo.map(fileOf)); // the texts of what will run, before any of it does
    const steps =
      opts.singleTransaction && todo.length
        ? await runAsOne(ctx, c, created, cur.version, todo, wait)
        : await runSteps(ctx, c, created, migrations, cur.version, todo, wait, paths);
    return done(cur.version, todo.length ? todo[todo.length - 1].after : cur.version, steps);
  } finally {
    await releaseLock(c, key);
  }
}

export interface StatusEntry {
  version: number;
  name: string;
  file: string;
  appliedAt?: string;
  edited?: boolean; // applied, and changed since
  dirty?: boolean;
  /** Below the current version yet never applied (a merged branch's file?): neither runner will apply it. */
  unrecorded?: boolean;
}

export interface Status {
  version: number | null;
  dirty: boolean;
  applied: StatusEntry[];
  pending: StatusEntry[];
}

/** The state, read without the lock, creating nothing. */
export async function status(c: Client, migrations: readonly Migration[]): Promise<Status> {
  const tables = await findTables(c);
  const cur = tables.hasVersionTable ? await readCurrent(c, tables) : { version: null, dirty: false };
  const hist = new Map<number, { checksum: string; applied_at: Date }>();
  if (tables.hasHistoryTable) {
    for (const r of (await c.query(`SELECT version, checksum, applied_at FROM ${tables.historyTable}`)).rows)
      hist.set(Number(r.version), r);
  }
  const applied: StatusEntry[] = [];
  const pending: StatusEntry[] = [];
  // Only gaps between recorded versions are suspect: golang-migrate records no history.
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

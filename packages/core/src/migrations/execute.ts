import type { Client } from 'pg';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { sqlState } from '../pg.ts';
import type { Migration, MigrationFile } from './files.ts';
import { needsOwnTransaction } from './statements.ts';
import { dirtyError, errorLine, fileMessage, transactionFailure, type HintPaths } from './diagnose.ts';
import { isLockTimeout, lockGiveUp, lockTimeoutSql, pauseBeforeRetry, runWatched, type LockWait } from './lock-wait.ts';
import { fileOf, type PlannedStep } from './plan.ts';
import { historySql, setVersionSql, versionLabel, type MigrationTables } from './state.ts';

export interface Step {
  version: number;
  name: string;
  file: string;
  direction: 'up' | 'down';
  ms: number;
  transactional: boolean;
}

/** Each file with its bookkeeping in one transaction where allowed; the file's text goes alone, as golang-migrate sends it. */
export async function runSteps(
  ctx: Pick<Ctx, 'log' | 'clock'>,
  c: Client,
  tables: MigrationTables,
  migrations: readonly Migration[],
  from: number | null,
  todo: readonly PlannedStep[],
  wait: LockWait,
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
            await runWatched(c, wait, f.sql);
            break;
          } catch (e) {
            const elapsed = now() - start;
            await rollback(c);
            if (isLockTimeout(e) && wait.policy.timeoutMs > 0) {
              if (attempt <= wait.policy.retries) {
                await pauseBeforeRetry(wait, f.file, attempt);
                continue;
              }
              await flush(c, tables, i, tx, before);
              throw lockGiveUp(
                f,
                wait,
                `nothing of ${f.file} was applied (it ran in a transaction, rolled back each time); the version is still ${versionLabel(before)}, not dirty`,
              );
            }
            await flush(c, tables, i, tx, before);
            throw await transactionFailure(c, f, e, elapsed, before);
          }
        }
        // Commits but the last are asynchronous: the last flushes them all; a crash loses whole migrations only.
        const tail = hasNext ? `SET LOCAL synchronous_commit = off; COMMIT${nextTx ? '; BEGIN' : ''}` : 'COMMIT';
        try {
          await c.query(`${setVersionSql(tables, s.after, false)}; ${historySql(tables, s.m, s.dir, now() - start)}; ${tail}`);
        } catch (e) {
          // Deferred constraints are checked at COMMIT: the file's failure, not ours.
          await rollback(c);
          await flush(c, tables, i, tx, before);
          throw await transactionFailure(c, f, e, Infinity, before);
        }
        open = nextTx;
      } else {
        // golang-migrate's protocol: mark dirty at the target version, run, mark clean; a failure stays dirty.
        await c.query(`${wait.policy.timeoutMs > 0 ? 'RESET lock_timeout; ' : ''}BEGIN; ${setVersionSql(tables, s.after, true)}; COMMIT`);
        try {
          await c.query(f.sql);
        } catch (e) {
          await rollback(c); // a file that manages its own transactions may have left one failed
          const line = await errorLine(c, f.sql, e, false, 0);
          const dirty = await dirtyError(c, tables, s.after, migrations, paths).catch(() => undefined); // the diagnosis is extra; the file's error is the one to report
          const alone = sqlState(e) === '25001' ? ' (it must be the only statement in its file)' : '';
          throw new UserError(
            `${fileMessage(f, e, line)}${alone}\n${f.file} runs outside a transaction, so the database is left dirty at version ${s.after ?? -1}, as golang-migrate leaves it` +
              (dirty ? `\n${dirty.message}` : ''),
            dirty?.hint,
          );
        }
        await c.query(
          `${lockTimeoutSql(wait.policy)}BEGIN; ${setVersionSql(tables, s.after, false)}; ${historySql(tables, s.m, s.dir, now() - start)}; COMMIT${nextTx ? '; BEGIN' : ''}`,
        );
        open = nextTx;
      }
      steps.push({ version: s.m.version, name: s.m.name, file: f.file, direction: s.dir, ms: now() - start, transactional: tx[i] });
    }
  } finally {
    if (open) await rollback(c);
    bar.end();
  }
  return steps;
}

/** `--single-transaction`, as `psql -1`. Not the default: every lock is held to the end, and some files work only apart. */
export async function runAsOne(
  ctx: Pick<Ctx, 'log' | 'clock'>,
  c: Client,
  tables: MigrationTables,
  from: number | null,
  todo: readonly PlannedStep[],
  wait: LockWait,
): Promise<Step[]> {
  const own = todo.map(fileOf).find((f) => needsOwnTransaction(f.sql));
  if (own) {
    throw new UserError(
      `--single-transaction: ${own.file} cannot run inside a transaction block (CONCURRENTLY, VACUUM, its own BEGIN/COMMIT...); nothing was applied`,
      'run without --single-transaction, or apply the migrations before it first (pnpm db:migrate up N)',
    );
  }
  const now = () => ctx.clock().getTime();
  const nothing = `nothing of this run was applied (one transaction, rolled back); the version is still ${versionLabel(from)}, not dirty`;
  const tooManyLocks = (e: unknown) =>
    sqlState(e) === '53200'
      ? new UserError(
          `${(e as Error).message}: this run takes more locks than one transaction may hold (max_locks_per_transaction)`,
          `${nothing}; run without --single-transaction, or in parts (pnpm db:migrate up N)`,
        )
      : undefined;
  // A file out of lock_timeout rolls back, and retries, the whole run.
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
          await runWatched(c, wait, f.sql);
          await c.query(historySql(tables, s.m, s.dir, now() - start));
        } catch (e) {
          await rollback(c);
          if (isLockTimeout(e) && wait.policy.timeoutMs > 0) {
            if (attempt > wait.policy.retries) throw lockGiveUp(f, wait, nothing);
            retry = f;
            break;
          }
          // Only the first file can be replayed faithfully: the others ran on files now rolled back.
          throw tooManyLocks(e) ?? (await transactionFailure(c, f, e, i === 0 ? now() - start : Infinity, from, nothing));
        }
        steps.push({ version: s.m.version, name: s.m.name, file: f.file, direction: s.dir, ms: now() - start, transactional: true });
      }
      if (!retry) {
        try {
          await c.query(`${setVersionSql(tables, todo[todo.length - 1].after, false)}; COMMIT`);
        } catch (e) {
          await rollback(c);
          if (!sqlState(e)) throw e;
          throw tooManyLocks(e) ?? new UserError(`the run failed at COMMIT (a deferred constraint?): ${(e as Error).message}`, nothing);
        }
        return steps;
      }
    } finally {
      bar.end();
    }
    await pauseBeforeRetry(wait, retry.file, attempt);
  }
}

/** After a failure, flushes the asynchronous commits before, by rewriting the row synchronously. */
async function flush(c: Client, tables: MigrationTables, i: number, tx: readonly boolean[], reached: number | null): Promise<void> {
  if (i === 0 || !tx[i - 1]) return;
  await c.query(`BEGIN; ${setVersionSql(tables, reached, false)}; COMMIT`).catch(() => {}); // the file's error is the one to report
}

async function rollback(c: Client): Promise<void> {
  await c.query('ROLLBACK').catch(() => {}); // after a failure: a dead connection has rolled back already
}

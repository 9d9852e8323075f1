import type { Client, ClientConfig } from 'pg';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { sqlState } from '../pg.ts';
import type { MigrationFile } from './files.ts';

/**
 * A waiting ALTER TABLE blocks every reader queued behind it, so transactional files get a short
 * lock_timeout and are retried whole; files outside a transaction (CONCURRENTLY) keep the server's.
 */
export interface LockPolicy {
  timeoutMs: number; // 0: the server's, and no retries
  retries: number;
}

export const DEFAULT_LOCK_POLICY: LockPolicy = { timeoutMs: 3000, retries: 3 };

export const isLockTimeout = (e: unknown) => sqlState(e) === '55P03';

const backoffMs = (attempt: number) => Math.min(500 * 2 ** (attempt - 1), 5000);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Blocked {
  wants?: string; // mode and relation
  holders: string[];
}

/** A session in words: pid, application, user, and (where this role may see them) state and start times. */
function sessionWords(
  r: { pid: number; app?: string; usr?: string; addr?: string; state?: string; query_start?: Date; xact_start?: Date },
  viewer: string,
): string {
  const iso = (d: Date) => new Date(d).toISOString();
  const head = `pid ${r.pid}, application "${r.app || ''}", user ${r.usr}${r.addr ? ` from ${r.addr}` : ''}`;
  if (r.state == null) return `${head} (its state and query start are hidden from ${viewer}, which is not in pg_read_all_stats)`;
  return `${head}, state ${r.state}${r.query_start ? `, query started ${iso(r.query_start)}` : ''}${r.xact_start ? `, transaction started ${iso(r.xact_start)}` : ''}`;
}

/** Who blocks the runner, asked from a second session while it waits: pg_blocking_pids is empty once lock_timeout ran out. */
export class LockWatch {
  #client?: Promise<Client | undefined>;
  last?: Blocked;
  constructor(
    private readonly c: Client,
    private readonly pid: number,
  ) {}

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
      const watcher = done ? undefined : await this.open();
      while (!done && watcher) {
        const b = await this.blockers(watcher).catch(() => undefined); // asked again in 200 ms
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
      const watcher = new Ctor({
        host: c.host,
        port: c.port,
        user: c.user,
        database: c.database,
        password: c.password,
        ssl: c.ssl,
        application_name: 'pg-deploy lock watch',
        connectionTimeoutMillis: 5000,
      });
      watcher.on('error', () => {}); // a lost watch fails its next query, which is caught
      await watcher.connect();
      return watcher;
    })().catch(() => undefined); // no watch, then: the message says the holder could not be seen
    return this.#client;
  }

  private async blockers(watcher: Client): Promise<Blocked> {
    const { rows } = await watcher.query(
      `SELECT (SELECT format('%s on %s', l.mode, CASE WHEN l.relation IS NOT NULL AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                                   THEN l.relation::regclass::text ELSE l.locktype END)
                 FROM pg_locks l WHERE l.pid = $1 AND NOT l.granted LIMIT 1) AS wants,
              b.pid, b.application_name AS app, b.usename AS usr, b.client_addr AS addr, b.state, b.query_start, b.xact_start
         FROM unnest(pg_blocking_pids($1)) AS x(pid) JOIN pg_stat_activity b ON b.pid = x.pid`,
      [this.pid],
    );
    return { wants: rows[0]?.wants ?? undefined, holders: rows.map((r) => sessionWords(r, watcher.user ?? 'this role')) };
  }

  async close(): Promise<void> {
    const watcher = await this.#client;
    await watcher?.end().catch(() => {}); // a dead watch has nothing to close
  }
}

export interface LockWait {
  policy: LockPolicy;
  watch?: LockWatch;
  log: Pick<Ctx['log'], 'warn'>;
}

/** Runs a transactional file, watched once it has run for a quarter of the lock timeout. */
export function runWatched(c: Client, wait: LockWait, sql: string): Promise<unknown> {
  const q = c.query(sql);
  return wait.watch ? wait.watch.during(Math.min(wait.policy.timeoutMs / 4, 1000), q) : q;
}

export async function pauseBeforeRetry(wait: LockWait, file: string, attempt: number): Promise<void> {
  const ms = backoffMs(attempt);
  const b = wait.watch?.last;
  wait.log.warn(
    `${file} waited more than ${wait.policy.timeoutMs / 1000}s for a lock${b?.wants ? ` (${b.wants})` : ''}${b?.holders.length ? ` held by ${b.holders.join('; ')}` : ''}; ` +
      `rolled back, trying again in ${ms / 1000}s (try ${attempt + 1} of ${wait.policy.retries + 1})`,
  );
  await sleep(ms);
}

/** A file out of lock_timeout on every try: what it waited for, and who held it. */
export function lockGiveUp(f: MigrationFile, wait: LockWait, nothing: string): UserError {
  const b = wait.watch?.last;
  const who = b?.holders.length
    ? `held by ${b.holders.join('; ')}`
    : 'held by a session that could not be seen (it let go in the meantime, or the watch could not connect)';
  const pid = b?.holders.length ? /^pid (\d+)/.exec(b.holders[0])![1] : 'pid';
  return new UserError(
    `${f.file}: waited more than ${wait.policy.timeoutMs / 1000}s for a lock${b?.wants ? ` (${b.wants})` : ''} on each of ${wait.policy.retries + 1} tries, ${who}`,
    `${nothing}. Let that session finish or end it (SELECT pg_terminate_backend(${pid})), then run the command again; ` +
      'DB_MIGRATE_STATEMENT_LOCK_TIMEOUT and DB_MIGRATE_STATEMENT_LOCK_RETRIES set how long and how often a migration waits',
  );
}

export function lockTimeoutSql(p: LockPolicy): string {
  return p.timeoutMs > 0 ? `SET lock_timeout = ${Math.round(p.timeoutMs)}; ` : '';
}

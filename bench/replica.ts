/**
 * Streaming replica and promotion (issue 12, item 2): `db:replica` and `db:promote` on loopback.
 *
 * 1. Write cost: unthrottled `pgbench -N` (an UPDATE, a SELECT and an INSERT per transaction) over
 *    verified TLS as the migration role, BENCH_SECONDS each, with no standby (the baseline), with the
 *    asynchronous standby, and with DB_SYNC_REPLICA=on.
 * 2. Lag: the same load throttled to BENCH_RATE transactions a second (a few thousand rows written a
 *    second), the primary's pg_stat_replication sampled every 100 ms: bytes behind
 *    (pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)) and replay_lag.
 * 3. Failover, BENCH_N rounds per mode on a fresh pair: the throttled load plus one client committing
 *    numbered rows one by one, SIGKILL to the primary's postmaster, then `db:promote --yes`. Reported:
 *    the promotion as db:promote measures it (pg_promote() until a write succeeds) and the whole task;
 *    the acknowledged commits missing on the promoted server, and the time they span (the loss window).
 *
 * Run: node_modules/.bin/tsx bench/replica.ts   (BENCH_N rounds, default 3; BENCH_SECONDS, default 5;
 * BENCH_RATE, default 2000). The servers run on Debian's binaries (the embedded server ships no
 * pg_basebackup); the major is discovered under /usr/lib/postgresql. Everything is removed on exit.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  adminClient,
  cli,
  connect,
  debianBin,
  fmtMs,
  freePort,
  libpqEnv,
  machine,
  main,
  median,
  pgbenchProject,
  printTable,
  progress,
  ratio,
  timed,
  type Creds,
  type Project,
} from './lib.ts';

const N = Number(process.env.BENCH_N || 3);
const SECONDS = Number(process.env.BENCH_SECONDS || 5);
const RATE = Number(process.env.BENCH_RATE || 2000);

const BIN = debianBin(['pg_basebackup']);

interface Pair {
  p: Project;
  c: Creds;
  replicaPort: number;
}

/** A project on Debian's binaries, migrated, with pgbench's tables (scale 1) and a `marks` table. */
async function pair(label: string, env: Record<string, string> = {}): Promise<Pair> {
  const replicaPort = await freePort();
  const { p, c } = await pgbenchProject(label, { bin: BIN, scale: 1, env: () => ({ DB_REPLICA_PORT: String(replicaPort), ...env }) });
  const m = await connect(p, c, c.migrator);
  await m.query('CREATE TABLE marks (id bigint PRIMARY KEY)');
  await m.end();
  return { p, c, replicaPort };
}

/** pgbench -N for `seconds`, throttled to `rate` tps or not; returns tps and the average latency in ms. */
async function pgbench(x: Pair, seconds: number, rate?: number): Promise<{ tps: number; latencyMs: number }> {
  const args = ['-N', '-c', '4', '-j', '2', '-T', String(seconds), '--no-vacuum', ...(rate ? ['-R', String(rate)] : [])];
  const r = await timed(path.join(BIN, 'pgbench'), args, { env: libpqEnv(x.p, x.c, x.c.migrator), timeoutMs: (seconds + 60) * 1000 });
  const tps = Number(/tps = ([\d.]+)/.exec(r.stdout)?.[1] ?? NaN);
  const latencyMs = Number(/latency average = ([\d.]+) ms/.exec(r.stdout)?.[1] ?? NaN);
  return { tps, latencyMs };
}

/** Samples the standby's lag on the primary every 100 ms until `until` settles. */
async function sampleLag(x: Pair, until: Promise<unknown>): Promise<{ bytes: number[]; seconds: number[] }> {
  const su = await adminClient(x.p, x.c);
  const bytes: number[] = [];
  const seconds: number[] = [];
  let done = false;
  void until.finally(() => (done = true));
  try {
    while (!done) {
      const r = await su.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS b,
        coalesce(extract(epoch FROM replay_lag), 0)::float8 AS s FROM pg_stat_replication WHERE application_name = 'pgdeploy_standby'`);
      if (r.rows[0]) {
        bytes.push(r.rows[0].b);
        seconds.push(r.rows[0].s);
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  } finally {
    await su.end().catch(() => {});
  }
  return { bytes, seconds };
}

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;
const kb = (b: number) => `${(b / 1024).toFixed(1)} kB`;
const sec = (s: number) => `${(s * 1000).toFixed(1)} ms`;

/** One failover: load, numbered commits, SIGKILL, db:promote; what the promoted server lacks. */
async function failover(mode: 'async' | 'sync', round: number) {
  const x = await pair(`failover-${mode}-${round}`, mode === 'sync' ? { DB_SYNC_REPLICA: 'on' } : {});
  await cli(['db:replica'], x.p.env);
  const load = pgbench(x, 30, RATE);
  const acked: { id: number; at: number }[] = [];
  const writer = (async () => {
    const c = await connect(x.p, x.c, x.c.migrator);
    try {
      for (let id = 1; ; id++) {
        await c.query('INSERT INTO marks VALUES ($1)', [id]);
        acked.push({ id, at: performance.now() });
      }
    } catch {
      // the primary died: the last insert was never acknowledged
    } finally {
      await c.end().catch(() => {});
    }
  })();
  await new Promise((r) => setTimeout(r, 3000));
  const pid = Number((await fs.readFile(path.join(x.p.nativeDir, 'data/postmaster.pid'), 'utf8')).split('\n')[0]);
  process.kill(pid, 'SIGKILL');
  await writer;
  await load;
  const t = await cli(['db:promote', '--yes', '--json'], x.p.env);
  const inner = JSON.parse(t.stdout).ms as number;
  const promoted = await connect({ ...x.p, port: x.replicaPort }, x.c, x.c.migrator);
  const last = Number((await promoted.query('SELECT coalesce(max(id), 0) AS m FROM marks')).rows[0].m);
  await promoted.end();
  const lost = acked.filter((a) => a.id > last);
  const keptAt = acked.find((a) => a.id === last)?.at ?? acked[0]?.at ?? 0;
  const windowMs = lost.length ? lost[lost.length - 1].at - keptAt : 0;
  await cli(['db:down'], x.p.env);
  return { promoteMs: inner, taskMs: t.ms, acked: acked.length, lost: lost.length, windowMs };
}

main(async () => {
  process.stdout.write(`bench/replica.ts: ${machine()}\nthis run's server and client tools: ${BIN} (overrides the line above)\n`);
  const x = await pair('lag');

  progress(`write cost: pgbench -N unthrottled, ${SECONDS}s, no standby`);
  const base = await pgbench(x, SECONDS);
  progress('db:replica (async)');
  const built = await cli(['db:replica'], x.p.env);
  progress(`write cost: async standby`);
  const asyncRun = await pgbench(x, SECONDS);
  progress(`lag: pgbench -N -R ${RATE}, ${SECONDS * 2}s, async`);
  const asyncLoad = pgbench(x, SECONDS * 2, RATE);
  const asyncLag = await sampleLag(x, asyncLoad);
  const asyncThrottled = await asyncLoad;
  progress('DB_SYNC_REPLICA=on db:replica');
  await cli(['db:replica'], { ...x.p.env, DB_SYNC_REPLICA: 'on' });
  const syncRun = await pgbench(x, SECONDS);
  progress(`lag: pgbench -N -R ${RATE}, ${SECONDS * 2}s, sync`);
  const syncLoad = pgbench(x, SECONDS * 2, RATE);
  const syncLag = await sampleLag(x, syncLoad);
  const syncThrottled = await syncLoad;
  await cli(['db:down'], x.p.env);

  printTable(
    `write cost of the standby: pgbench -N over verified TLS, 4 clients, ${SECONDS}s each (ratio vs no standby)`,
    ['', 'tps', 'ratio', 'latency avg', 'ratio'],
    [
      ['no standby (baseline)', base.tps.toFixed(0), '1.00x', `${base.latencyMs.toFixed(2)} ms`, '1.00x'],
      [
        'async standby',
        asyncRun.tps.toFixed(0),
        ratio(asyncRun.tps, base.tps),
        `${asyncRun.latencyMs.toFixed(2)} ms`,
        ratio(asyncRun.latencyMs, base.latencyMs),
      ],
      [
        'DB_SYNC_REPLICA=on',
        syncRun.tps.toFixed(0),
        ratio(syncRun.tps, base.tps),
        `${syncRun.latencyMs.toFixed(2)} ms`,
        ratio(syncRun.latencyMs, base.latencyMs),
      ],
    ],
  );
  const lagRow = (name: string, l: { bytes: number[]; seconds: number[] }, t: { tps: number }) => [
    name,
    `${t.tps.toFixed(0)} (${(t.tps * 2).toFixed(0)} rows/s)`,
    String(l.bytes.length),
    kb(median(l.bytes)),
    kb(pct(l.bytes, 0.95)),
    kb(Math.max(...l.bytes)),
    sec(median(l.seconds)),
    sec(pct(l.seconds, 0.95)),
    sec(Math.max(...l.seconds)),
  ];
  printTable(
    `replication lag under pgbench -N -R ${RATE} (an UPDATE and an INSERT per transaction), sampled every 100 ms on the primary`,
    ['', 'tps', 'samples', 'bytes p50', 'p95', 'max', 'replay_lag p50', 'p95', 'max'],
    [lagRow('async', asyncLag, asyncThrottled), lagRow('sync', syncLag, syncThrottled)],
  );

  const rounds: Record<'async' | 'sync', Awaited<ReturnType<typeof failover>>[]> = { async: [], sync: [] };
  for (const mode of ['async', 'sync'] as const)
    for (let i = 0; i < N; i++) {
      progress(`failover ${mode} round ${i + 1}/${N}`);
      rounds[mode].push(await failover(mode, i));
    }
  const row = (mode: 'async' | 'sync') => {
    const r = rounds[mode];
    return [
      mode,
      fmtMs(median(r.map((x) => x.promoteMs))),
      fmtMs(median(r.map((x) => x.taskMs))),
      r.map((x) => `${x.lost}/${x.acked}`).join(' '),
      r.map((x) => `${x.windowMs.toFixed(1)}`).join(' '),
    ];
  };
  printTable(
    `failover under pgbench -R ${RATE} plus one client committing numbered rows: SIGKILL to the primary, then db:promote --yes (${N} rounds each, medians)`,
    ['', 'promote (pg_promote to a write)', 'db:promote task', 'lost/acknowledged commits per round', 'loss window ms per round'],
    [row('async'), row('sync')],
  );
  process.stdout.write(`\ndb:replica (base backup of pgbench -s 1, start, streaming): ${fmtMs(built.ms)}\n`);
});

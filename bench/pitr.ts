/**
 * Point-in-time recovery (issue 12): `db:restore --to-time` over about 200 MB of WAL against the raw
 * steps a careful person types by hand on the same base backup, archive and target: tar extract of
 * base.tar and pg_wal.tar, chown, recovery.signal and the recovery settings, `pg_ctl start`, and a
 * poll until pg_is_in_recovery() is false.
 *
 * Data and WAL: `pgbench -i -s BENCH_SCALE` by the migration role over verified TLS, a base backup
 * (`db:backup --physical`), then `pgbench -N` (simple updates) until BENCH_WAL_MB of WAL has been
 * written after the backup's start. The target is a moment after that load; a second, short load
 * follows it (what the recovery must not replay).
 *
 * Run: node_modules/.bin/tsx bench/pitr.ts   (BENCH_N rounds each side, default 1; BENCH_WAL_MB,
 * default 200; BENCH_SCALE, default 5). Debian's server and client binaries (pg_basebackup must match
 * the server); everything is removed on exit, the WAL archive too.
 */
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  adminQuery,
  cli,
  debianBin,
  fmtMs,
  freePort,
  libpqEnv,
  machine,
  main,
  MEDIAN_HEADER,
  medianRow,
  must,
  onCleanup,
  pgbenchProject,
  printTable,
  progress,
  repeat,
  serverUser,
  timed,
} from './lib.ts';

const N = Number(process.env.BENCH_N || 1);
const WAL_MB = Number(process.env.BENCH_WAL_MB || 200);
const SCALE = Number(process.env.BENCH_SCALE || 5);

const lsnBytes = (lsn: string) => {
  const [hi, lo] = lsn.split('/');
  return parseInt(hi, 16) * 2 ** 32 + parseInt(lo, 16);
};

main(async () => {
  const bin = debianBin(['pg_basebackup', 'postgres']);
  process.stdout.write(`bench/pitr.ts: ${machine()}\nthis run's server and client tools: ${bin} (overrides the line above)\n`);
  const backupsOf = (p: { dir: string }) => path.join(p.dir, 'backups');
  const { p, c } = await pgbenchProject('pitr', {
    bin,
    scale: SCALE,
    env: (p) => ({ DB_BACKUP_DIR: backupsOf(p), DB_BACKUP_KEEP: '1000/0/0' }),
    // backups/wal may be a link to an archive outside the project's folder (the server user cannot reach it): gone once the server is down.
    afterDown: async (p) => {
      const archive = await fs.realpath(path.join(backupsOf(p), 'wal')).catch(() => undefined); // never armed
      if (archive) await fs.rm(archive, { recursive: true, force: true });
    },
  });
  const backups = backupsOf(p);
  const env = libpqEnv(p, c, c.migrator);
  progress('base backup: db:backup --physical');
  const base = JSON.parse((await cli(['db:backup', '--physical', '--json'], p.env, { timeoutMs: 600_000 })).stdout);
  const baseMs = base.ms as number;
  progress(`write load: pgbench -N until ${WAL_MB} MB of WAL`);
  const lsnNow = async () => String((await adminQuery(p, c, 'SELECT pg_current_wal_lsn()::text AS l')).rows[0].l);
  const loadStart = performance.now();
  while (lsnBytes(await lsnNow()) - lsnBytes(base.startLsn) < WAL_MB * 1e6) {
    await must(path.join(bin, 'pgbench'), ['-N', '-c', '4', '-j', '2', '-T', '5', '--no-vacuum'], { env, timeoutMs: 120_000 });
  }
  const loadMs = performance.now() - loadStart;
  const targetLsn = await lsnNow();
  const target = String(
    (await adminQuery(p, c, `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS t`)).rows[0].t,
  );
  const walMb = (lsnBytes(targetLsn) - lsnBytes(base.startLsn)) / 1e6;
  await new Promise((r) => setTimeout(r, 1100));
  await must(path.join(bin, 'pgbench'), ['-N', '-c', '2', '-T', '2', '--no-vacuum'], { env }); // after the target

  const baseDir = base.backup as string;
  const archive = await fs.realpath(path.join(backups, 'wal'));
  const su = serverUser();
  const q = (s: string) => `'${s.replace(/'/g, "''")}'`;

  /** The raw steps, in a data directory of their own on another port; the archive is only read. */
  async function byHand(i: number): Promise<number> {
    const dir = path.join('/tmp', `pgdeploy-bench-pitr-raw-${process.pid}-${i}`);
    const data = path.join(dir, 'data');
    const port = await freePort();
    await fs.rm(dir, { recursive: true, force: true });
    await fs.mkdir(data, { recursive: true, mode: 0o700 });
    await fs.chmod(dir, 0o755);
    const stop = () =>
      timed(path.join(bin, 'pg_ctl'), ['-D', data, 'stop', '-m', 'immediate', '-w'], { as: su, cwd: dir, timeoutMs: 60_000 });
    onCleanup(`remove ${dir}`, async () => {
      if (!existsSync(dir)) return; // the round removed it itself
      await stop();
      await fs.rm(dir, { recursive: true, force: true });
    });
    const t0 = performance.now();
    await must('tar', ['-xf', path.join(baseDir, 'base.tar'), '-C', data]);
    await must('tar', ['-xf', path.join(baseDir, 'pg_wal.tar'), '-C', path.join(data, 'pg_wal')]);
    await fs.appendFile(
      path.join(data, 'postgresql.auto.conf'),
      `restore_command = ${q(`cp '${archive}/%f' %p`)}\nrecovery_target_time = ${q(`${target}+00`)}\nrecovery_target_action = 'promote'\n`,
    );
    await fs.writeFile(path.join(data, 'recovery.signal'), '');
    if (su) await must('chown', ['-R', `${su.uid}:${su.gid}`, dir]);
    const opts = `-c port=${port} -c listen_addresses='' -c unix_socket_directories=${dir} -c archive_mode=off`;
    await must(path.join(bin, 'pg_ctl'), ['-D', data, '-l', path.join(dir, 'log'), '-o', opts, 'start'], { as: su, cwd: dir });
    const psqlEnv = { PGHOST: dir, PGPORT: String(port), PGUSER: c.admin.user, PGPASSWORD: c.admin.password, PGDATABASE: 'postgres' };
    for (;;) {
      const r = await timed(path.join(bin, 'psql'), ['-XtAc', 'SELECT pg_is_in_recovery()'], { env: psqlEnv });
      if (r.code === 0 && r.stdout.trim() === 'f') break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const ms = performance.now() - t0;
    await stop();
    await fs.rm(dir, { recursive: true, force: true });
    return ms;
  }

  const ours: number[] = [];
  const oursInside: number[] = [];
  const raw: number[] = [];
  let stopped = '';
  await repeat(N, async (i) => {
    progress(`round ${i + 1}/${N}: the raw steps`);
    raw.push(await byHand(i));
    progress(`round ${i + 1}/${N}: db:restore --to-time ${target} --yes --no-backup`);
    const r = await cli(['db:restore', '--to-time', target, '--yes', '--no-backup', '--json'], p.env, { timeoutMs: 3_600_000 });
    const out = JSON.parse(r.stdout);
    stopped = out.stopped;
    ours.push(r.ms);
    oursInside.push(out.ms);
    return r.ms;
  });

  printTable(
    `point-in-time recovery over ${walMb.toFixed(0)} MB of WAL (pgbench -s ${SCALE}, base backup ${(base.bytes / 1e6).toFixed(0)} MB), ${N} round(s) each`,
    MEDIAN_HEADER,
    [
      medianRow('raw: tar x2 + chown + recovery settings + pg_ctl start + poll (baseline)', raw, raw),
      medianRow(`node dist/cli.js db:restore --to-time ... --yes --no-backup`, ours, raw),
      medianRow('  inside the task (its ms: no node start-up; archive flush, checks, stop, provisioning)', oursInside, raw),
    ],
  );
  process.stdout.write(
    `\nbase backup (db:backup --physical): ${fmtMs(baseMs)}; the write load took ${fmtMs(loadMs)}\nwhere the recovery stopped: ${stopped}\n`,
  );
});

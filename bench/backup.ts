/**
 * Backup and restore (issue 5): `db:backup` and `db:restore` against raw `pg_dump -Fc` and
 * `createdb` + `pg_restore` on the same data, the same server and the same client binaries, in the
 * same run, alternating so that drift in the machine hits both sides alike.
 *
 * Data: `pgbench -i -s 10` (a million rows in pgbench_accounts), made by the migration role over
 * verified TLS, so it owns the tables as it owns what migrations make.
 *
 * Also the directory format with parallel jobs: `db:backup --format dir --jobs J` against raw
 * `pg_dump -Fd -j J`, and `db:restore --jobs J` against `createdb` + `pg_restore -j J`.
 *
 * Run: node_modules/.bin/tsx bench/backup.ts   (BENCH_N rounds, default 3; BENCH_SCALE, default 10;
 * BENCH_JOBS, default 2; BENCH_DIR=0 skips the directory format)
 * The server runs on Debian's binaries (pg_dump refuses a newer server, and the embedded server ships
 * no client tools); its major is discovered under /usr/lib/postgresql. Everything is removed on exit.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  cli,
  debianBin,
  machine,
  main,
  MEDIAN_HEADER,
  median,
  medianRow,
  must,
  pgbenchProject,
  printTable,
  progress,
  ratio,
  repeat,
  type Creds,
  type Project,
} from './lib.ts';

const N = Number(process.env.BENCH_N || 3);
const SCALE = Number(process.env.BENCH_SCALE || 10);
const JOBS = Number(process.env.BENCH_JOBS || 2);
const DIR = process.env.BENCH_DIR !== '0';

/** The superuser on the socket, for the raw tools: what our task runs them as. */
function suEnv(p: Project, c: Creds): Record<string, string> {
  return { PGHOST: path.join(p.nativeDir, 'run'), PGPORT: String(p.port), PGUSER: c.admin.user, PGPASSWORD: c.admin.password };
}

main(async () => {
  const bin = debianBin(['pg_dump']);
  process.stdout.write(`bench/backup.ts: ${machine()}\nthis run's server and client tools: ${bin} (overrides the line above)\n`);
  const { p, c } = await pgbenchProject('backup', {
    bin,
    scale: SCALE,
    // Retention would remove earlier rounds' backups: keep them all for the run.
    env: (p) => ({ DB_BACKUP_DIR: path.join(p.dir, 'backups'), DB_BACKUP_KEEP: '1000/0/0' }),
  });
  const backups = p.env.DB_BACKUP_DIR;
  const raw = path.join(p.dir, 'raw');
  await fs.mkdir(raw);
  const su = suEnv(p, c);

  const ours: number[] = [];
  const oursInside: number[] = [];
  const theirs: number[] = [];
  const careful: number[] = [];
  let last = '';
  let rawFile = '';
  await repeat(N, async (i) => {
    progress(`backup round ${i + 1}/${N}`);
    const a = await cli(['db:backup', '--json'], p.env);
    last = JSON.parse(a.stdout).name;
    oursInside.push(JSON.parse(a.stdout).ms);
    rawFile = path.join(raw, `round-${i}.dump`);
    const b = await must(path.join(bin, 'pg_dump'), ['--format=custom', '--no-password', `--file=${rawFile}`, c.database], { env: su });
    // What a careful script does besides the dump: the roles too, and a checksum, all flushed.
    const t0 = performance.now();
    const rolesFile = path.join(raw, `round-${i}.roles.sql`);
    await Promise.all([
      must(path.join(bin, 'pg_dump'), ['--format=custom', '--no-password', `--file=${rawFile}.careful`, c.database], { env: su }),
      must(path.join(bin, 'pg_dumpall'), ['--roles-only', '--no-role-passwords', '--no-password', `--file=${rolesFile}`], { env: su }),
    ]);
    await must('sha256sum', [`${rawFile}.careful`, rolesFile]);
    await must('sync', [`${rawFile}.careful`, rolesFile]);
    careful.push(performance.now() - t0);
    ours.push(a.ms);
    theirs.push(b.ms);
    return a.ms;
  });
  const oursBytes = (await fs.stat(path.join(backups, last, 'db.dump'))).size;
  const rawBytes = (await fs.stat(rawFile)).size;

  const verify = await repeat(1, async () => (await cli(['db:backup:verify', last], p.env)).ms);

  const oursR: number[] = [];
  const theirsR: number[] = [];
  await repeat(N, async (i) => {
    progress(`restore round ${i + 1}/${N}`);
    const a = await cli(['db:restore', last, '--yes', '--no-backup'], p.env);
    const db = `bench_raw_${i}`;
    const t0 = performance.now();
    await must(path.join(bin, 'createdb'), ['--no-password', '--template=template0', db], { env: su });
    await must(path.join(bin, 'pg_restore'), ['--no-password', `--dbname=${db}`, rawFile], { env: su, timeoutMs: 600_000 });
    theirsR.push(performance.now() - t0);
    await must(path.join(bin, 'dropdb'), ['--no-password', db], { env: su });
    oursR.push(a.ms);
    return a.ms;
  });

  // The directory format, J jobs each side.
  const dirOurs: number[] = [];
  const dirRaw: number[] = [];
  const dirRestoreOurs: number[] = [];
  const dirRestoreRaw: number[] = [];
  if (DIR) {
    let lastDir = '';
    let rawDir = '';
    await repeat(N, async (i) => {
      progress(`directory-format backup round ${i + 1}/${N} (${JOBS} jobs)`);
      const a = await cli(['db:backup', '--format', 'dir', '--jobs', String(JOBS), '--json'], p.env);
      lastDir = JSON.parse(a.stdout).name;
      rawDir = path.join(raw, `round-${i}.dir`);
      const b = await must(
        path.join(bin, 'pg_dump'),
        ['--format=directory', `--jobs=${JOBS}`, '--no-password', `--file=${rawDir}`, c.database],
        { env: su },
      );
      dirOurs.push(a.ms);
      dirRaw.push(b.ms);
      return a.ms;
    });
    await repeat(N, async (i) => {
      progress(`directory-format restore round ${i + 1}/${N} (${JOBS} jobs)`);
      const a = await cli(['db:restore', lastDir, '--jobs', String(JOBS), '--yes', '--no-backup'], p.env);
      const db = `bench_raw_dir_${i}`;
      const t0 = performance.now();
      await must(path.join(bin, 'createdb'), ['--no-password', '--template=template0', db], { env: su });
      await must(path.join(bin, 'pg_restore'), ['--no-password', `--jobs=${JOBS}`, `--dbname=${db}`, rawDir], {
        env: su,
        timeoutMs: 600_000,
      });
      dirRestoreRaw.push(performance.now() - t0);
      await must(path.join(bin, 'dropdb'), ['--no-password', db], { env: su });
      dirRestoreOurs.push(a.ms);
      return a.ms;
    });
  }

  printTable(
    `backup and restore of pgbench -s ${SCALE} in the application database, ${N} rounds, alternating (ratio vs the raw tool above it)`,
    MEDIAN_HEADER,
    [
      medianRow('raw pg_dump -Fc (baseline)', theirs, theirs),
      medianRow('node dist/cli.js db:backup', ours, theirs),
      medianRow("  inside the task (the manifest's ms: no node start-up, no retention)", oursInside, theirs),
      medianRow('  raw pg_dump -Fc + pg_dumpall --roles-only, sha256sum, sync', careful, theirs),
      medianRow('raw createdb + pg_restore (baseline)', theirsR, theirsR),
      medianRow('node dist/cli.js db:restore --yes --no-backup', oursR, theirsR),
      medianRow('node dist/cli.js db:backup:verify (no raw twin)', verify, theirsR),
      ...(DIR
        ? [
            medianRow(`raw pg_dump -Fd -j ${JOBS} (baseline)`, dirRaw, dirRaw),
            medianRow(`node dist/cli.js db:backup --format dir --jobs ${JOBS}`, dirOurs, dirRaw),
            medianRow(`raw createdb + pg_restore -j ${JOBS} (baseline)`, dirRestoreRaw, dirRestoreRaw),
            medianRow(`node dist/cli.js db:restore --jobs ${JOBS} --yes --no-backup`, dirRestoreOurs, dirRestoreRaw),
          ]
        : []),
    ],
  );
  const within = (xs: number[], base: number[]) => (median(xs) <= 1.1 * median(base) ? 'met' : 'MISSED');
  const dirLine = () =>
    `  directory format, ${JOBS} jobs: backup ${ratio(median(dirOurs), median(dirRaw))} -> ${within(dirOurs, dirRaw)}; ` +
    `restore ${ratio(median(dirRestoreOurs), median(dirRestoreRaw))} -> ${within(dirRestoreOurs, dirRestoreRaw)}\n`;
  process.stdout.write(`\ndump sizes: ours ${(oursBytes / 1e6).toFixed(1)} MB, raw ${(rawBytes / 1e6).toFixed(1)} MB
targets (issue 5), within 10% of raw: backup ${ratio(median(ours), median(theirs))} -> ${within(ours, theirs)}; restore ${ratio(median(oursR), median(theirsR))} -> ${within(oursR, theirsR)}
${DIR ? dirLine() : ''}`);
});

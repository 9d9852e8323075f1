/**
 * Start-up costs (issue 2), side by side in one run, each against a baseline measured in the same run:
 *
 *   (a) `db:up` of an existing, stopped cluster until a first TLS query answers,
 *       vs `pg_ctl start -w` on the same binaries and data directory followed by the same query;
 *   (b) deploy from nothing (secrets, certificates, initdb, start, migrate):
 *       `turbo run deploy` (what `pnpm run deploy` runs) and the same CLI steps in sequence,
 *       vs the raw commands a shell script would run (openssl, initdb, pg_ctl, psql);
 *   (c) a task's start-up overhead: `help` and `db:migrate:create --help` vs `node -e 0`,
 *       and `db:migrate` with nothing pending vs a node process opening one TLS connection.
 *
 * Run: node_modules/.bin/tsx bench/startup.ts   (BENCH_N, BENCH_DEPLOY_N, BENCH_SPAWN_N to change counts)
 * Every server listens on a free port on 127.0.0.1 and is stopped, and every temp dir removed, on exit.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  adminQuery,
  CLI,
  NODE,
  PG_BIN,
  ROOT,
  cli,
  clientBin,
  creds,
  dataDir,
  fmtMs,
  libpqEnv,
  machine,
  main,
  makeProject,
  median,
  must,
  printTable,
  progress,
  query,
  ratio,
  removeProject,
  serverOptions,
  serverUser,
  stopServer,
  timed,
  connect,
  type Project,
} from './lib.ts';

const N = Number(process.env.BENCH_N || 5);
const DEPLOY_N = Number(process.env.BENCH_DEPLOY_N || 3);
const SPAWN_N = Number(process.env.BENCH_SPAWN_N || 20);
const BENCH_DIR = path.dirname(new URL(import.meta.url).pathname);

const stats = (xs: number[]) => ({ med: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
const row = (label: string, xs: number[], base: number[]) => {
  const s = stats(xs);
  return [label, fmtMs(s.med), fmtMs(s.min), fmtMs(s.max), ratio(s.med, median(base))];
};
const HEADER = ['', 'median', 'min', 'max', 'ratio'];

/** pg_ctl as the server user, as the native runtime runs it. */
function pgCtl(p: Project, args: string[]) {
  return must(path.join(PG_BIN, 'pg_ctl'), ['-D', dataDir(p), ...args], { as: serverUser(), cwd: p.nativeDir, timeoutMs: 60_000 });
}

/** The first TLS query from this (already warm) process: the same tail for every contender. */
async function firstQuery(p: Project, c: Awaited<ReturnType<typeof creds>>): Promise<void> {
  const r = await query(p, c, c.app, 'select 1 as ok');
  if (r.rows[0].ok !== 1) throw new Error('select 1 did not answer 1');
}

/** Tries a TLS login every `everyMs` until one succeeds: the floor any readiness wait can reach. */
async function pollTls(p: Project, c: Awaited<ReturnType<typeof creds>>, everyMs: number, limitMs = 30_000): Promise<void> {
  const end = performance.now() + limitMs;
  for (;;) {
    try {
      const client = await connect(p, c, c.app);
      await client.query('select 1');
      await client.end();
      return;
    } catch (e) {
      if (performance.now() > end) throw e;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }
}

async function partA(p: Project) {
  progress(`(a) db:up of a stopped cluster vs pg_ctl start -w, ${N} rounds each, interleaved`);
  const c = await creds(p);
  const up: number[] = [];
  const upProc: number[] = [];
  const raw: number[] = [];
  const rawProc: number[] = [];
  const floor: number[] = [];
  const opts = serverOptions(p);
  const log = path.join(p.nativeDir, 'postgres.log');
  for (let i = 0; i < N; i++) {
    await stopServer(p);
    let t0 = performance.now();
    const r = await cli(['db:up'], p.env);
    await firstQuery(p, c);
    up.push(performance.now() - t0);
    upProc.push(r.ms);

    await stopServer(p);
    t0 = performance.now();
    const s = await pgCtl(p, ['start', '-w', '-l', log, '-o', opts]);
    await firstQuery(p, c);
    raw.push(performance.now() - t0);
    rawProc.push(s.ms);

    await stopServer(p);
    t0 = performance.now();
    await pgCtl(p, ['start', '-W', '-l', log, '-o', opts]);
    await pollTls(p, c, 5);
    floor.push(performance.now() - t0);
  }
  await stopServer(p);
  printTable(`(a) start an existing, stopped cluster until the first TLS query answers (N=${N}, from process start)`, HEADER, [
    row('pg_ctl start -w + first TLS query (baseline)', raw, raw),
    row('node dist/cli.js db:up + first TLS query', up, raw),
    row('pg_ctl start -W + TLS login polled every 5 ms', floor, raw),
    row('  db:up process alone', upProc, raw),
    row('  pg_ctl start -w process alone', rawProc, raw),
  ]);
}

/** What a careful shell script would run for "from nothing": the floor for deploy. */
async function rawDeploy(p: Project): Promise<void> {
  const ssl = p.sslDir;
  const tls = path.join(p.nativeDir, 'tls');
  const as = serverUser();
  await fs.mkdir(ssl, { recursive: true, mode: 0o700 });
  for (const d of [p.nativeDir, tls, path.join(p.nativeDir, 'run')]) {
    await fs.mkdir(d, { recursive: true, mode: 0o700 });
    if (as) await fs.chown(d, as.uid, as.gid);
  }
  // Secrets: the same files db:secrets writes (passwords never reach argv).
  const pw = () => randomBytes(32).toString('base64url');
  const secrets: Record<string, string> = {
    postgres_user: 'postgres',
    postgres_password: pw(),
    postgres_db: 'app',
    migrate_user: 'app_owner',
    migrate_password: pw(),
    app_user: 'app',
    app_password: pw(),
  };
  await fs.mkdir(p.secretsDir, { recursive: true, mode: 0o700 });
  for (const [n, v] of Object.entries(secrets)) await fs.writeFile(path.join(p.secretsDir, n), v, { mode: 0o600 });
  // A CA and a server certificate signed by it, EC P-256, with the SANs verify-full needs.
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '365'];
  await must('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    path.join(ssl, 'ca.key'),
    '-out',
    path.join(ssl, 'ca.crt'),
    '-subj',
    '/CN=bench CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await must('openssl', [
    'req',
    '-x509',
    ...ec,
    '-CA',
    path.join(ssl, 'ca.crt'),
    '-CAkey',
    path.join(ssl, 'ca.key'),
    '-keyout',
    path.join(ssl, 'server.key'),
    '-out',
    path.join(ssl, 'server.crt'),
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:api-db',
    '-addext',
    'basicConstraints=CA:FALSE',
  ]);
  for (const f of ['server.crt', 'server.key']) {
    await fs.copyFile(path.join(ssl, f), path.join(tls, f));
    await fs.chmod(path.join(tls, f), 0o600);
    if (as) await fs.chown(path.join(tls, f), as.uid, as.gid);
  }
  const pwFile = path.join(p.nativeDir, '.pw');
  await fs.writeFile(pwFile, secrets.postgres_password, { mode: 0o600 });
  if (as) await fs.chown(pwFile, as.uid, as.gid);
  await must(
    path.join(PG_BIN, 'initdb'),
    ['-D', dataDir(p), '-U', 'postgres', `--pwfile=${pwFile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--no-locale'],
    { as, cwd: p.nativeDir, timeoutMs: 120_000 },
  );
  await fs.rm(pwFile);
  await pgCtl(p, ['start', '-w', '-l', path.join(p.nativeDir, 'postgres.log'), '-o', serverOptions(p)]);
  const c = await creds(p);
  const psql = clientBin('psql');
  // The roles pg_hba.conf admits over TCP and a database owned by the migration role, as the
  // superuser on the Unix socket; the SQL (with passwords) goes through stdin, one statement a time.
  const lit = (v: string) => `'${v.replace(/'/g, "''")}'`;
  await must(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'], {
    env: { ...libpqEnv(p, c, c.admin, 'postgres'), PGHOST: path.join(p.nativeDir, 'run'), PGSSLMODE: 'disable' },
    input: [
      'CREATE ROLE pgdeploy_tcp NOLOGIN;',
      `CREATE ROLE app_owner LOGIN PASSWORD ${lit(secrets.migrate_password)} IN ROLE pgdeploy_tcp;`,
      `CREATE ROLE app LOGIN PASSWORD ${lit(secrets.app_password)} IN ROLE pgdeploy_tcp;`,
      'CREATE DATABASE app OWNER app_owner;',
    ].join('\n'),
  });
  // The example migration as the migration role over verified TLS, in one transaction.
  await must(psql, ['-X', '-q', '-1', '-v', 'ON_ERROR_STOP=1', '-f', path.join(p.migrationsDir, '000001_create_accounts.up.sql')], {
    env: libpqEnv(p, c, c.migrator),
  });
}

/** The example migration's table exists in the application database (asked over the Unix socket). */
async function assertDeployed(p: Project): Promise<void> {
  const c = await creds(p);
  const r = await adminQuery(p, c, "select to_regclass('public.accounts') is not null as ok", c.database);
  if (!r.rows[0].ok) throw new Error(`deploy in ${p.dir} did not apply the example migration`);
}

async function partB() {
  progress(`(b) deploy from nothing, ${DEPLOY_N} rounds of each, interleaved`);
  const pnpm: number[] = [];
  const turbo: number[] = [];
  const steps: number[] = [];
  const stepMs: Record<string, number[]> = {};
  const raw: number[] = [];
  // turbo must not phone home or leave a daemon behind: this benchmark talks only to 127.0.0.1.
  // Nor may pnpm look for a newer pnpm (it would ask the registry; CI=true, set for every child, also stops it).
  const turboEnv = { TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1', TURBO_NO_UPDATE_NOTIFIER: '1', npm_config_update_notifier: 'false' };
  const STEPS = [['db:secrets'], ['db:secure'], ['db:up'], ['db:migrate'], ['db:status']];
  for (let i = 0; i < DEPLOY_N; i++) {
    let p = await makeProject('deploy-pnpm');
    let t0 = performance.now();
    await must('pnpm', ['run', 'deploy', '--no-daemon', '--output-logs=errors-only'], {
      env: { ...p.env, ...turboEnv },
      timeoutMs: 180_000,
    });
    pnpm.push(performance.now() - t0);
    await assertDeployed(p);
    await removeProject(p);

    p = await makeProject('deploy-turbo');
    t0 = performance.now();
    await must(path.join(ROOT, 'node_modules/.bin/turbo'), ['run', 'deploy', '--no-daemon', '--output-logs=errors-only'], {
      env: { ...p.env, ...turboEnv },
      timeoutMs: 180_000,
    });
    turbo.push(performance.now() - t0);
    await assertDeployed(p);
    await removeProject(p);

    p = await makeProject('deploy-cli');
    t0 = performance.now();
    for (const s of STEPS) {
      const r = await cli(s, p.env, { timeoutMs: 120_000 });
      (stepMs[s[0]] ??= []).push(r.ms);
    }
    steps.push(performance.now() - t0);
    await assertDeployed(p);
    await removeProject(p);

    p = await makeProject('deploy-raw');
    t0 = performance.now();
    await rawDeploy(p);
    raw.push(performance.now() - t0);
    await assertDeployed(p);
    await removeProject(p);
  }
  printTable(`(b) deploy from nothing: secrets, certificates, initdb, start, example migration (N=${DEPLOY_N})`, HEADER, [
    row('raw: openssl x2, initdb, pg_ctl start -w, psql roles+db, psql -1 migration (baseline)', raw, raw),
    row('pnpm run deploy (pnpm -> turbo -> pnpm run <task> x3)', pnpm, raw),
    row('turbo run deploy (node_modules/.bin/turbo)', turbo, raw),
    row('CLI steps in sequence (node dist/cli.js ...)', steps, raw),
    ...STEPS.map((s) => row(`  ${s[0]}${s[0] === 'db:up' ? ' (includes initdb)' : ''}`, stepMs[s[0]], raw)),
  ]);
}

async function partC(p: Project) {
  progress(`(c) task start-up overhead, ${SPAWN_N} runs of each, interleaved`);
  await cli(['db:up'], p.env);
  const c = await creds(p);
  await cli(['db:migrate'], p.env); // the example migration is applied: from here on there is nothing to do
  const psql = clientBin('psql');
  const contenders: [string, string, string[], Record<string, string>][] = [
    ['node -e 0 (baseline)', NODE, ['-e', '0'], {}],
    ['node dist/cli.js help', NODE, [CLI, 'help'], p.env],
    ['node dist/cli.js db:migrate:create --help', NODE, [CLI, 'db:migrate:create', '--help'], p.env],
    ['node + pg: one TLS connection, select 1', NODE, [path.join(BENCH_DIR, 'tls-select1.mjs')], libpqEnv(p, c, c.migrator)],
    ['node dist/cli.js db:migrate (nothing pending)', NODE, [CLI, 'db:migrate'], p.env],
    ['node dist/cli.js db:status', NODE, [CLI, 'db:status'], p.env],
    ['pnpm --version (pnpm start-up, paid per turbo task)', 'pnpm', ['--version'], { npm_config_update_notifier: 'false' }],
    ['turbo --version', path.join(ROOT, 'node_modules/.bin/turbo'), ['--version'], { TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1' }],
    ['psql -c "select 1" over TLS (C client)', psql, ['-X', '-q', '-c', 'select 1'], libpqEnv(p, c, c.migrator)],
  ];
  const times = new Map<string, number[]>(contenders.map(([l]) => [l, []]));
  for (let i = -2; i < SPAWN_N; i++) {
    for (const [label, cmd, args, env] of contenders) {
      const r = await must(cmd, args, { env, timeoutMs: 60_000 });
      if (label.includes('db:migrate (') && !/no change/.test(r.stdout + r.stderr))
        throw new Error(`db:migrate had something to do: ${r.stdout}`);
      if (i >= 0) times.get(label)!.push(r.ms); // two warm-up rounds are not counted
    }
  }
  await stopServer(p);
  const base = times.get(contenders[0][0])!;
  const tls = times.get(contenders[3][0])!;
  const rows = contenders.map(([l]) => row(l, times.get(l)!, base));
  rows[4].push(ratio(median(times.get(contenders[4][0])!), median(tls)));
  rows[5].push(ratio(median(times.get(contenders[5][0])!), median(tls)));
  rows[3].push('1.00x');
  printTable(
    `(c) whole-process time of a task (N=${SPAWN_N}, medians; ratio vs node -e 0, last column vs node + one TLS connection)`,
    [...HEADER, 'vs TLS'],
    rows,
  );
}

main(async () => {
  process.stdout.write(`bench/startup.ts: ${machine()}\n`);
  const only = process.argv.slice(2);
  const want = (x: string) => !only.length || only.includes(x);
  if (want('a') || want('c')) {
    progress('preparing a stopped cluster (db:secrets, db:secure, db:up, db:down)');
    const p = await makeProject('startup');
    await cli(['db:secrets'], p.env);
    await cli(['db:secure'], p.env);
    await cli(['db:up'], p.env);
    await stopServer(p);
    if (want('a')) await partA(p);
    if (want('c')) await partC(p);
  }
  if (want('b')) await partB();
});

/**
 * The docker runtime (DB_RUNTIME=docker, infra/docker-compose.yml), side by side in one run, each
 * against the raw Compose commands a shell script would type, measured in the same run:
 *
 *   (a) deploy from nothing: `turbo run deploy` and the same CLI steps in sequence, each on a new
 *       Compose project with new secrets, vs `docker compose up -d --wait api-db`, the same
 *       provisioning SQL piped to psql in the container, and `docker compose run --rm db-migrate up`,
 *       on an identical new project whose secrets and certificates were made beforehand (untimed);
 *   (b) a second deploy, everything made and the stack running: the same contenders, vs
 *       `docker compose up -d --wait api-db` + `docker compose run --rm db-migrate up`;
 *   (c) `db:up` on an existing volume with the stack stopped (`db:down` before every round), until a
 *       first verified TLS query answers, vs `docker compose up -d --wait api-db` + the same query.
 *
 * After every deploy (untimed) the app role logs in over verify-full TLS and reads the end state
 * (migration version, tables, grants, owners, default privileges); every contender must match.
 * One more, untimed, run of the CLI steps goes through a `docker` wrapper that logs each call's
 * duration: where ours spends its time.
 *
 * Run: node build.mjs && node_modules/.bin/tsx bench/docker.ts   (parts: a b c trace, e.g. `... docker.ts b`; BENCH_N, BENCH_UP_N)
 * Needs a Docker engine with Compose v2 and the stand-in images (`pnpm images:build`, built on demand).
 * Every Compose project it makes is named pgdbench-*, and is removed (containers, network, volume)
 * with its temp dir on exit, failure or signal; nothing else on the engine is touched.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createDatabaseSql, databaseSql, ownershipSql, rolesSql, type Roles } from '@dbkit/core/roles';
import {
  NODE,
  CLI,
  ROOT,
  cli,
  connect,
  creds,
  fmtMs,
  machine,
  main,
  MEDIAN_HEADER,
  medianRow,
  must,
  onCleanup,
  printTable,
  progress,
  timed,
} from './lib.ts';
import { COMPOSE_FILE, IMAGES_ENV, composeVars, makeDockerProject, type DockerProject } from '../test/setup/docker.ts';

const N = Number(process.env.BENCH_N || 3);
const UP_N = Number(process.env.BENCH_UP_N || 5);
const TURBO = path.join(ROOT, 'node_modules/.bin/turbo');
// turbo must not phone home or leave a daemon behind (as in bench/startup.ts).
const TURBO_ENV = { TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1', TURBO_NO_UPDATE_NOTIFIER: '1', npm_config_update_notifier: 'false' };
const STEPS = ['db:secrets', 'db:secure', 'db:up', 'db:migrate', 'db:status'];

/** Round i runs the contenders starting from the i-th, so none is always first after a teardown. */
const rotate = <T>(xs: T[], i: number) => xs.map((_, k) => xs[(k + i) % xs.length]);

// ---------------------------------------------------------------------------------------------
// Compose projects of our own: pgdbench-<label>-<hex>, removed on exit, failure or signal

const removed = new Set<string>();

async function project(label: string): Promise<DockerProject> {
  const base = await makeDockerProject({ prefix: `pgdeploy-bench-docker-${label}-` });
  const name = `pgdbench-${label}-${randomBytes(3).toString('hex')}`;
  const p: DockerProject = { ...base, name, env: { ...base.env, COMPOSE_PROJECT_NAME: name } };
  onCleanup(`remove compose project ${name} and ${p.dir}`, () => destroy(p));
  return p;
}

/** `docker compose -p NAME down -v --remove-orphans`, then anything still labelled with our project name, by id; then its files. */
async function destroy(p: DockerProject): Promise<void> {
  if (removed.has(p.name)) return;
  await timed('docker', ['compose', '-f', COMPOSE_FILE, '-p', p.name, '--profile', 'app', 'down', '-v', '--remove-orphans', '-t', '5'], {
    env: composeVars(p),
    timeoutMs: 120_000,
  });
  const label = `label=com.docker.compose.project=${p.name}`;
  const ids = async (args: string[]) =>
    (await timed('docker', [...args, '--filter', label], { timeoutMs: 30_000 })).stdout.split('\n').filter(Boolean);
  const containers = await ids(['ps', '-aq']);
  if (containers.length) await timed('docker', ['rm', '-f', '-v', ...containers], { timeoutMs: 60_000 });
  const volumes = await ids(['volume', 'ls', '-q']);
  if (volumes.length) await timed('docker', ['volume', 'rm', ...volumes], { timeoutMs: 60_000 });
  const networks = await ids(['network', 'ls', '-q']);
  if (networks.length) await timed('docker', ['network', 'rm', ...networks], { timeoutMs: 60_000 });
  if (containers.length + volumes.length + networks.length)
    process.stderr.write(
      `cleanup: ${p.name}: compose down left ${containers.length} containers, ${volumes.length} volumes, ${networks.length} networks; removed by id\n`,
    );
  await fs.rm(p.dir, { recursive: true, force: true });
  removed.add(p.name);
}

/** A raw `docker compose` call, as a user types it from the root (same file, same interpolated variables as the tasks). */
const dc = (p: DockerProject, args: string[], input?: string) =>
  must('docker', ['compose', '-f', path.relative(ROOT, COMPOSE_FILE), ...args], {
    env: composeVars(p),
    cwd: ROOT,
    input,
    timeoutMs: 180_000,
  });

// ---------------------------------------------------------------------------------------------
// The contenders

/** `node_modules/.bin/turbo run deploy`: secure -> up -> migrate -> deploy, each a `pnpm run` of packages/db. */
async function turboDeploy(p: DockerProject): Promise<number> {
  return (
    await must(TURBO, ['run', 'deploy', '--no-daemon', '--output-logs=errors-only'], {
      env: { ...p.env, ...TURBO_ENV },
      timeoutMs: 300_000,
    })
  ).ms;
}

/** The CLI steps turbo chains, one after the other; returns each step's time, and db:up's own "in N ms". */
async function cliSteps(
  p: DockerProject,
  env: Record<string, string> = p.env,
): Promise<{ total: number; steps: Record<string, number>; upInside?: number }> {
  const t0 = performance.now();
  const steps: Record<string, number> = {};
  let upInside: number | undefined;
  for (const s of STEPS) {
    const r = await cli([s], env, { timeoutMs: 300_000 });
    steps[s] = r.ms;
    if (s === 'db:up') upInside = Number(/ in (\d+) ms/.exec(r.stdout + r.stderr)?.[1]) || undefined;
  }
  return { total: performance.now() - t0, steps, upInside };
}

/** The roles the project's secret files name, as the tool reads them. */
async function roles(p: DockerProject): Promise<Roles> {
  const c = await creds(p);
  return { database: c.database, admin: c.admin, migrator: c.migrator, app: c.app };
}

/**
 * The provisioning SQL db:up sends (packages/core/src/provision.ts, the same functions), in one psql
 * session: roles (SCRAM verifiers, never a password), the database unless the image made it
 * (POSTGRES_DB), then ownership and grants from inside the application database.
 */
function provisioningSql(r: Roles): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(r.database)) throw new Error(`database name ${r.database} needs quoting in \\connect`);
  const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
  return [
    rolesSql(r),
    `SELECT ${lit(createDatabaseSql(r))} WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = ${lit(r.database)})`,
    '\\gexec',
    `\\connect ${r.database}`,
    ownershipSql(r),
    databaseSql(r),
    '',
  ].join('\n');
}

// psql as the superuser on the container's socket; the password comes from the container's own
// secret file, so neither argv nor the host environment holds it.
const PSQL_AS_SUPERUSER = [
  'exec',
  '-T',
  'api-db',
  'sh',
  '-c',
  'PGUSER="$(cat /run/secrets/postgres_user)"; PGPASSWORD="$(cat /run/secrets/postgres_password)"; export PGUSER PGPASSWORD; ' +
    'exec psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -d postgres -f -',
];

/**
 * The migration job as a user types it: Compose first makes sure api-db is up and healthy (its
 * depends_on). The tool passes --no-deps (it has just started api-db itself); that form is a
 * second raw row, so the baseline's own Compose overhead is visible.
 */
const RUN_MIGRATE = ['run', '--rm', 'db-migrate', 'up'];
const RUN_MIGRATE_NO_DEPS = ['run', '--rm', '--no-deps', 'db-migrate', 'up'];

/** What a shell script runs on a project whose secrets and certificates exist: start, provision, migrate. */
async function rawDeploy(
  p: DockerProject,
  sql: string,
  run = RUN_MIGRATE,
): Promise<{ total: number; up: number; provision: number; migrate: number }> {
  const t0 = performance.now();
  const up = (await dc(p, ['up', '-d', '--wait', 'api-db'])).ms;
  const provision = (await dc(p, PSQL_AS_SUPERUSER, sql)).ms;
  const migrate = (await dc(p, run)).ms;
  return { total: performance.now() - t0, up, provision, migrate };
}

/** The second deploy's raw twin: everything exists, so start (a no-op when running) and migrate. */
async function rawRedeploy(p: DockerProject, run = RUN_MIGRATE): Promise<{ total: number; up: number; migrate: number }> {
  const t0 = performance.now();
  const up = (await dc(p, ['up', '-d', '--wait', 'api-db'])).ms;
  const migrate = (await dc(p, run)).ms;
  return { total: performance.now() - t0, up, migrate };
}

// ---------------------------------------------------------------------------------------------
// The end state every contender must leave: read as the app role over verify-full TLS

type State = Record<string, string>;

async function endState(p: DockerProject): Promise<State> {
  const c = await creds(p);
  const client = await connect(p, c, c.app); // TLS, CA and host name verified (libpq's verify-full)
  try {
    const r = await client.query(
      `SELECT current_user AS login,
      (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls,
      (SELECT string_agg(version || CASE WHEN dirty THEN ' dirty' ELSE '' END, ',') FROM schema_migrations) AS migrated,
      (SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public') AS public_tables,
      has_table_privilege('public.accounts', 'SELECT, INSERT, UPDATE, DELETE') AS app_reads_writes,
      has_schema_privilege('public', 'CREATE') AS app_creates,
      pg_has_role('pgdeploy_tcp', 'MEMBER') AS app_in_tcp_group,
      (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()) AS db_owner,
      (SELECT datacl::text FROM pg_database WHERE datname = current_database()) AS db_acl,
      (SELECT string_agg(rolname || ' super=' || rolsuper || ' createrole=' || rolcreaterole || ' createdb=' || rolcreatedb, '; ' ORDER BY rolname)
         FROM pg_roles WHERE rolname IN ($1, $2)) AS roles,
      (SELECT string_agg(defaclobjtype::text || '=' || defaclacl::text, ' ' ORDER BY defaclobjtype) FROM pg_default_acl) AS default_acl,
      (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema') AS schemas`,
      [c.migrator.user, c.app.user],
    );
    const s = Object.fromEntries(Object.entries(r.rows[0]).map(([k, v]) => [k, String(v)]));
    const want: State = {
      login: c.app.user,
      tls: 'true',
      migrated: '1',
      public_tables: 'accounts,schema_migrations',
      app_reads_writes: 'true',
      app_creates: 'false',
      app_in_tcp_group: 'true',
      db_owner: c.migrator.user,
    };
    const wrong = Object.entries(want)
      .filter(([k, v]) => s[k] !== v)
      .map(([k, v]) => `${k}=${s[k]} (want ${v})`);
    if (wrong.length) throw new Error(`${p.name}: wrong end state: ${wrong.join(', ')}`);
    return s;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Every contender's state equals the others'; only `schemas` may differ (the tool's guard schema,
 * pgdeploy, which the raw commands do not make): returned as one line naming who has what.
 */
function compareStates(states: Map<string, State>): string {
  const [[refName, ref], ...rest] = [...states];
  for (const [name, s] of rest) {
    for (const k of Object.keys(ref)) {
      if (k !== 'schemas' && s[k] !== ref[k]) throw new Error(`end states differ: ${k}: ${refName} "${ref[k]}", ${name} "${s[k]}"`);
    }
  }
  const bySchemas = new Map<string, string[]>();
  for (const [name, s] of states) bySchemas.set(s.schemas, [...(bySchemas.get(s.schemas) ?? []), name]);
  return bySchemas.size === 1 ? '' : `schemas ${[...bySchemas].map(([v, names]) => `"${v}" (${names.join(', ')})`).join(' vs ')}`;
}

/** The first verified TLS query as the app role: the same tail for every contender of (c). */
async function firstQuery(p: DockerProject): Promise<void> {
  const c = await creds(p);
  const client = await connect(p, c, c.app);
  try {
    if ((await client.query('SELECT 1 AS ok')).rows[0].ok !== 1) throw new Error('select 1 did not answer 1');
  } finally {
    await client.end().catch(() => {});
  }
}

/** Tries a verified TLS login every `everyMs` until one succeeds: the floor any readiness wait can reach. */
async function pollTls(p: DockerProject, everyMs: number, limitMs = 120_000): Promise<void> {
  const end = performance.now() + limitMs;
  for (;;) {
    try {
      return await firstQuery(p);
    } catch (e) {
      if (performance.now() > end) throw e;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The parts

async function partA(): Promise<void> {
  progress(`(a) deploy from nothing, ${N} rounds of each, interleaved (each on a new Compose project, removed after)`);
  const turbo: number[] = [];
  const steps: number[] = [];
  const stepMs: Record<string, number[]> = {};
  const upInside: number[] = [];
  const raw: number[] = [];
  const rawParts: Record<'up' | 'provision' | 'migrate', number[]> = { up: [], provision: [], migrate: [] };
  const rawNoDeps: number[] = [];
  const rawNoDepsMigrate: number[] = [];
  const states = new Map<string, State>();
  /** A new project with the tool's secrets and certificates and the SQL it would send, all untimed. */
  const rawProject = async (label: string) => {
    const p = await project(label);
    await cli(['db:secrets'], p.env);
    await cli(['db:secure'], p.env);
    return { p, sql: provisioningSql(await roles(p)) };
  };
  const contenders: [string, () => Promise<void>][] = [
    [
      'turbo run deploy',
      async () => {
        const p = await project('turbo');
        turbo.push(await turboDeploy(p));
        states.set('turbo run deploy', await endState(p));
        await destroy(p);
      },
    ],
    [
      'CLI steps',
      async () => {
        const p = await project('cli');
        const r = await cliSteps(p);
        steps.push(r.total);
        for (const [s, ms] of Object.entries(r.steps)) (stepMs[s] ??= []).push(ms);
        if (r.upInside) upInside.push(r.upInside);
        states.set('CLI steps', await endState(p));
        await destroy(p);
      },
    ],
    [
      'raw',
      async () => {
        const { p, sql } = await rawProject('raw');
        const r = await rawDeploy(p, sql);
        raw.push(r.total);
        rawParts.up.push(r.up);
        rawParts.provision.push(r.provision);
        rawParts.migrate.push(r.migrate);
        states.set('raw', await endState(p));
        await destroy(p);
      },
    ],
    [
      'raw with run --no-deps',
      async () => {
        const { p, sql } = await rawProject('rawnd');
        const r = await rawDeploy(p, sql, RUN_MIGRATE_NO_DEPS);
        rawNoDeps.push(r.total);
        rawNoDepsMigrate.push(r.migrate);
        states.set('raw with run --no-deps', await endState(p));
        await destroy(p);
      },
    ],
  ];
  for (let i = 0; i < N; i++) {
    for (const [label, run] of rotate(contenders, i)) {
      progress(`(a) round ${i + 1}/${N}: ${label}`);
      await run();
    }
  }
  const notes = compareStates(states);
  printTable(
    `(a) deploy from nothing on the docker runtime (N=${N}, from process start; each on a new Compose project: network, volume, initdb in the container)`,
    MEDIAN_HEADER,
    [
      medianRow(
        'raw: compose up -d --wait, psql provisioning, compose run --rm db-migrate up (baseline; secrets+certs made before)',
        raw,
        raw,
      ),
      medianRow('turbo run deploy (node_modules/.bin/turbo)', turbo, raw),
      medianRow('CLI steps in sequence (node dist/cli.js ...)', steps, raw),
      ...STEPS.map((s) => medianRow(`  ${s}`, stepMs[s], raw)),
      ...(upInside.length ? [medianRow('    db:up, its own "in N ms" (compose up, provisioning, TLS logins)', upInside, raw)] : []),
      medianRow('  raw: docker compose up -d --wait api-db', rawParts.up, raw),
      medianRow('  raw: psql provisioning in the container', rawParts.provision, raw),
      medianRow('  raw: docker compose run --rm db-migrate up', rawParts.migrate, raw),
      medianRow('raw, the migration as the tool runs it: run --rm --no-deps db-migrate up', rawNoDeps, raw),
      medianRow('  its docker compose run --rm --no-deps db-migrate up', rawNoDepsMigrate, raw),
      medianRow(
        "CLI db:up + db:migrate (the raw twin's steps)",
        stepMs['db:up'].map((x, k) => x + stepMs['db:migrate'][k]),
        raw,
      ),
    ],
  );
  process.stdout.write(
    `end state, read as the app role over verify-full TLS: the same for every contender${notes ? `, except ${notes}: pgdeploy is the tool's production guard (db:up records NODE_ENV there)` : ''}\n`,
  );
}

/** A project deployed once by the CLI steps (untimed): for (b) and (c). */
async function deployedProject(): Promise<DockerProject> {
  progress('preparing a deployed project (the CLI steps, untimed)');
  const p = await project('warm');
  await cliSteps(p);
  await endState(p);
  return p;
}

async function partB(p: DockerProject): Promise<void> {
  progress(`(b) second deploy, stack running, ${N} rounds of each, interleaved`);
  const turbo: number[] = [];
  const steps: number[] = [];
  const stepMs: Record<string, number[]> = {};
  const raw: number[] = [];
  const rawParts: Record<'up' | 'migrate', number[]> = { up: [], migrate: [] };
  const rawNoDeps: number[] = [];
  const rawNoDepsMigrate: number[] = [];
  const states = new Map<string, State>();
  const contenders: [string, () => Promise<void>][] = [
    [
      'turbo run deploy',
      async () => {
        turbo.push(await turboDeploy(p));
        states.set('turbo run deploy', await endState(p));
      },
    ],
    [
      'CLI steps',
      async () => {
        const r = await cliSteps(p);
        steps.push(r.total);
        for (const [s, ms] of Object.entries(r.steps)) (stepMs[s] ??= []).push(ms);
        states.set('CLI steps', await endState(p));
      },
    ],
    [
      'raw',
      async () => {
        const r = await rawRedeploy(p);
        raw.push(r.total);
        rawParts.up.push(r.up);
        rawParts.migrate.push(r.migrate);
        states.set('raw', await endState(p));
      },
    ],
    [
      'raw with run --no-deps',
      async () => {
        const r = await rawRedeploy(p, RUN_MIGRATE_NO_DEPS);
        rawNoDeps.push(r.total);
        rawNoDepsMigrate.push(r.migrate);
        states.set('raw with run --no-deps', await endState(p));
      },
    ],
  ];
  for (let i = 0; i < N; i++) for (const [, run] of rotate(contenders, i)) await run();
  compareStates(states);
  printTable(`(b) second deploy: everything made, api-db running (N=${N})`, MEDIAN_HEADER, [
    medianRow('raw: compose up -d --wait api-db, compose run --rm db-migrate up (baseline)', raw, raw),
    medianRow('turbo run deploy', turbo, raw),
    medianRow('CLI steps in sequence', steps, raw),
    ...STEPS.map((s) => medianRow(`  ${s}`, stepMs[s], raw)),
    medianRow('  raw: docker compose up -d --wait api-db (already up)', rawParts.up, raw),
    medianRow('  raw: docker compose run --rm db-migrate up (no change)', rawParts.migrate, raw),
    medianRow('raw, the migration as the tool runs it: run --rm --no-deps db-migrate up', rawNoDeps, raw),
    medianRow('  its docker compose run --rm --no-deps db-migrate up (no change)', rawNoDepsMigrate, raw),
    medianRow(
      "CLI db:up + db:migrate (the raw twin's steps)",
      stepMs['db:up'].map((x, k) => x + stepMs['db:migrate'][k]),
      raw,
    ),
  ]);
}

async function partC(p: DockerProject): Promise<void> {
  progress(`(c) db:up on an existing volume, stack stopped (db:down before every round), ${UP_N} rounds of each, interleaved`);
  const ours: number[] = [];
  const oursProc: number[] = [];
  const raw: number[] = [];
  const rawProc: number[] = [];
  const floor: number[] = [];
  const contenders: (() => Promise<void>)[] = [
    async () => {
      const t0 = performance.now();
      const r = await cli(['db:up'], p.env, { timeoutMs: 180_000 });
      await firstQuery(p);
      ours.push(performance.now() - t0);
      oursProc.push(r.ms);
    },
    async () => {
      const t0 = performance.now();
      const r = await dc(p, ['up', '-d', '--wait', 'api-db']);
      await firstQuery(p);
      raw.push(performance.now() - t0);
      rawProc.push(r.ms);
    },
    async () => {
      const t0 = performance.now();
      await dc(p, ['up', '-d', 'api-db']);
      await pollTls(p, 20);
      floor.push(performance.now() - t0);
    },
  ];
  for (let i = 0; i < UP_N; i++) {
    for (const run of rotate(contenders, i)) {
      await cli(['db:down'], p.env, { timeoutMs: 120_000 });
      await run();
    }
  }
  printTable(
    `(c) start an existing volume with the stack stopped (db:down before each) until the first verified TLS query answers (N=${UP_N})`,
    MEDIAN_HEADER,
    [
      medianRow('docker compose up -d --wait api-db + first TLS query (baseline)', raw, raw),
      medianRow('node dist/cli.js db:up + first TLS query', ours, raw),
      medianRow('docker compose up -d (no --wait) + TLS login polled every 20 ms (floor)', floor, raw),
      medianRow('  db:up process alone', oursProc, raw),
      medianRow('  docker compose up -d --wait process alone', rawProc, raw),
    ],
  );
}

// ---------------------------------------------------------------------------------------------
// Where ours spends it: one more run of the CLI steps with every docker call timed

/** A `docker` first on PATH that runs the real one and appends "start end rc args" (no secret is ever in argv). */
async function dockerWrapper(dir: string, log: string): Promise<string> {
  const real = (await must('sh', ['-c', 'command -v docker'])).stdout.trim();
  const bin = path.join(dir, 'trace-bin');
  await fs.mkdir(bin, { recursive: true });
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  await fs.writeFile(
    path.join(bin, 'docker'),
    `#!/bin/sh
# bench/docker.ts: times each docker call of one traced run
s=$(date +%s%N)
${q(real)} "$@"
rc=$?
e=$(date +%s%N)
{ printf '%s %s %s' "$s" "$e" "$rc"; printf ' %s' "$@"; printf '\\n'; } >> ${q(log)}
exit "$rc"
`,
    { mode: 0o755 },
  );
  return bin;
}

/** The docker calls of one step, shortened: `compose -f <file>` dropped, and at most 6 words. */
function describeCall(args: string[]): string {
  const a = [...args];
  if (a[0] === 'compose' && a[1] === '-f') a.splice(1, 2);
  return a.slice(0, 6).join(' ') + (a.length > 6 ? ' ...' : '');
}

interface Call {
  ms: number;
  rc: string;
  args: string[];
}

/** Runs `run` with the wrapper first on PATH; returns the docker calls it made, in order. */
async function traced(p: DockerProject, run: (env: Record<string, string>) => Promise<void>): Promise<Call[]> {
  const log = path.join(p.dir, `docker-trace-${randomBytes(3).toString('hex')}.log`);
  const bin = await dockerWrapper(p.dir, log);
  await run({ ...p.env, PATH: `${bin}:${process.env.PATH}` });
  return (await fs.readFile(log, 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [s, e, rc, ...args] = l.split(' ');
      return { ms: (Number(e) - Number(s)) / 1e6, rc, args };
    });
}

async function partTrace(): Promise<void> {
  progress('where the time goes: one traced run of the CLI steps from nothing, then again, then db:down + db:up');
  const p = await project('trace');
  const callRows: string[][] = [];
  const stepRows: string[][] = [];
  const step = async (task: string, label: string) => {
    let ms = 0;
    const calls = await traced(p, async (env) => {
      ms = (await cli([task], env, { timeoutMs: 300_000 })).ms;
    });
    const inDocker = calls.reduce((sum, c) => sum + c.ms, 0);
    stepRows.push([label, fmtMs(ms), fmtMs(inDocker), fmtMs(ms - inDocker), String(calls.length)]);
    for (const c of calls) callRows.push([`${label}: docker ${describeCall(c.args)}`, fmtMs(c.ms), c.rc === '0' ? '' : `exit ${c.rc}`]);
  };
  for (const s of STEPS) await step(s, `first deploy: ${s}`);
  for (const s of STEPS) await step(s, `second deploy: ${s}`);
  await cli(['db:down'], p.env);
  await step('db:up', 'stack stopped: db:up');
  await destroy(p);
  printTable(
    'where ours spends it: one more run (not in the tables above) with every docker call timed through a wrapper (~2 ms a call)',
    ['step', 'process', 'in docker calls', 'outside them', 'calls'],
    stepRows,
  );
  printTable('the docker calls of that run, in order', ['step: call', 'ms', ''], callRows);
}

main(async () => {
  const version = (args: string[]) => timed('docker', args, { timeoutMs: 30_000 }).then((r) => r.stdout.trim());
  const imageIds = await Promise.all(
    Object.values(IMAGES_ENV).map(
      async (img) =>
        `${img} ${(await version(['image', 'inspect', '--format', '{{.Id}}', img])).slice(7, 19) || '(missing: built on demand)'}`,
    ),
  );
  process.stdout.write(`bench/docker.ts: ${machine()}
docker engine ${await version(['version', '--format', '{{.Server.Version}}'])}, compose ${await version(['compose', 'version', '--short'])}; images: ${imageIds.join(', ')}
node ${NODE} runs ${path.relative(ROOT, CLI)} (a copy of dist/cli.js); turbo runs dist/cli.js itself
`);
  const only = process.argv.slice(2);
  const want = (x: string) => !only.length || only.includes(x);
  if (want('a')) await partA();
  if (want('b') || want('c')) {
    const p = await deployedProject();
    if (want('b')) await partB(p);
    if (want('c')) await partC(p);
    await destroy(p);
  }
  if (want('trace')) await partTrace();
});

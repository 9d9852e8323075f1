import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { connect } from '@dbkit/core/pg';
import { makeProject, removeProject, run, cli, appTarget, type Project, type CliResult } from './setup/project.ts';

interface Ctx {
  p?: Project;
  first?: CliResult;
  second?: CliResult;
  before?: Record<string, { mtimeMs: number; body: string }>;
}

const deploy = suite<Ctx>('pnpm run deploy (native runtime, from nothing)');

/** `pnpm run deploy` exactly as the README says, with this project's state directories. */
const pnpmDeploy = (p: Project) => run('pnpm', ['run', 'deploy'], { ...p.env, DB_RUNTIME: 'native' });

const files = [
  'secrets/postgres_user',
  'secrets/postgres_password',
  'secrets/postgres_db',
  'secrets/app_user',
  'secrets/app_password',
  'secrets/migrate_user',
  'secrets/migrate_password',
  'ssl/ca.crt',
  'ssl/ca.key',
  'ssl/server.crt',
  'ssl/server.key',
];

async function snapshot(p: Project) {
  const out: Record<string, { mtimeMs: number; body: string }> = {};
  for (const f of files) {
    const full = path.join(p.dir, f);
    out[f] = { mtimeMs: (await fs.stat(full)).mtimeMs, body: await fs.readFile(full, 'utf8') };
  }
  return out;
}

/** psql (a client we did not write) with libpq's own TLS checks; the password goes in the environment. */
async function psql(p: Project, host: string, sslmode: string, sql: string) {
  const t = await appTarget(p);
  return run('psql', ['-X', '-A', '-t', '-c', sql], {
    PGHOST: host,
    PGPORT: String(p.port),
    PGUSER: t.user,
    PGDATABASE: t.database,
    PGPASSWORD: t.password,
    PGSSLMODE: sslmode,
    PGSSLROOTCERT: path.join(p.sslDir, 'ca.crt'),
    PGCONNECT_TIMEOUT: '5',
  });
}

deploy.before(async (ctx) => {
  ctx.p = await makeProject();
  ctx.first = await pnpmDeploy(ctx.p);
});

deploy.after(async (ctx) => {
  await removeProject(ctx.p);
});

deploy('succeeds and runs secure, up and migrate in that order', (ctx) => {
  const r = ctx.first!;
  assert.is(r.code, 0, r.stdout + r.stderr);
  const order = ['@dbkit/db:secure', '@dbkit/db:up', '@dbkit/db:migrate'].map((t) => r.stdout.indexOf(`${t}: `));
  assert.ok(
    order.every((i) => i >= 0),
    r.stdout,
  );
  assert.equal(
    [...order].sort((a, b) => a - b),
    order,
  );
});

deploy('deploy ends the chain secure -> up -> migrate with no process of its own', async (ctx) => {
  const r = await run(path.resolve('node_modules/.bin/turbo'), ['run', 'deploy', '--dry=json'], {
    ...ctx.p!.env,
    TURBO_TELEMETRY_DISABLED: '1',
  });
  assert.is(r.code, 0, r.stderr);
  const tasks = new Map<string, { command: string; dependencies: string[] }>(
    JSON.parse(r.stdout).tasks.map((t: { taskId: string }) => [t.taskId, t]),
  );
  assert.equal(tasks.get('@dbkit/db#deploy')?.dependencies, ['@dbkit/db#migrate']);
  assert.is(tasks.get('@dbkit/db#deploy')?.command, '<NONEXISTENT>');
  assert.equal(tasks.get('@dbkit/db#migrate')?.dependencies, ['@dbkit/db#up']);
  assert.equal(tasks.get('@dbkit/db#up')?.dependencies, ['@dbkit/db#secure']);
});

deploy('creates the secrets 0600 in a 0700 directory, without trailing newlines', async (ctx) => {
  const p = ctx.p!;
  assert.is((await fs.stat(p.secretsDir)).mode & 0o777, 0o700);
  for (const n of ['postgres_user', 'postgres_password', 'postgres_db', 'app_user', 'app_password', 'migrate_user', 'migrate_password']) {
    const f = path.join(p.secretsDir, n);
    assert.is((await fs.stat(f)).mode & 0o777, 0o600, n);
    assert.not.match(await fs.readFile(f, 'utf8'), /\n$/);
  }
  assert.is(await fs.readFile(path.join(p.secretsDir, 'app_user'), 'utf8'), 'app');
  assert.is(await fs.readFile(path.join(p.secretsDir, 'postgres_db'), 'utf8'), 'app');
  for (const n of ['postgres_password', 'app_password', 'migrate_password']) {
    assert.match(await fs.readFile(path.join(p.secretsDir, n), 'utf8'), /^[A-Za-z0-9_-]{43,}$/);
  }
});

deploy('creates the CA and a server certificate whose key only its owner can read', async (ctx) => {
  const p = ctx.p!;
  for (const k of ['ca.key', 'server.key']) assert.is((await fs.stat(path.join(p.sslDir, k))).mode & 0o777, 0o600, k);
});

deploy('never prints a password', async (ctx) => {
  for (const n of ['postgres_password', 'app_password', 'migrate_password']) {
    const password = await fs.readFile(path.join(ctx.p!.secretsDir, n), 'utf8');
    assert.not.ok((ctx.first!.stdout + ctx.first!.stderr).includes(password), n);
  }
});

deploy('serves verify-full TLS as localhost and as 127.0.0.1', async (ctx) => {
  for (const host of ['localhost', '127.0.0.1']) {
    const r = await psql(ctx.p!, host, 'verify-full', 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    assert.is(r.code, 0, `${host}: ${r.stderr}`);
    assert.is(r.stdout.trim(), 't');
  }
});

deploy('refuses plaintext over TCP', async (ctx) => {
  const r = await psql(ctx.p!, '127.0.0.1', 'disable', 'SELECT 1');
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /no encryption/);
});

deploy('applies the example migration and records it in schema_migrations', async (ctx) => {
  const c = await connect(await appTarget(ctx.p!));
  try {
    const { rows } = await c.query('SELECT version::int AS version, dirty FROM schema_migrations');
    assert.equal(rows, [{ version: 1, dirty: false }]);
    const t = await c.query("SELECT to_regclass('public.accounts') IS NOT NULL AS ok");
    assert.ok(t.rows[0].ok);
  } finally {
    await c.end();
  }
});

deploy('a second deploy changes nothing and reuses the secrets and certificates', async (ctx) => {
  const p = ctx.p!;
  const before = await snapshot(p);
  const r = await pnpmDeploy(p);
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /no change/);
  assert.match(r.stdout, /kept postgres_user, postgres_password, postgres_db, migrate_user, migrate_password, app_user, app_password/);
  assert.match(r.stdout, /certificates are valid; kept them/);
  assert.equal(await snapshot(p), before);
});

deploy('db:down stops the server', async (ctx) => {
  const p = ctx.p!;
  const r = await cli(['db:down'], p.env);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /PostgreSQL stopped/);
  const again = await psql(p, 'localhost', 'verify-full', 'SELECT 1');
  assert.is.not(again.code, 0);
  assert.is((await cli(['db:down'], p.env)).stdout.trim(), 'PostgreSQL was not running');
});

deploy.run();

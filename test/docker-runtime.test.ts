import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cli, makeProject, removeProject, startProject, ROOT, type CliResult, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';
import { nativePaths } from '@dbkit/core/runtime/native';

// No Docker engine runs here. A recording stub stands for it (test/setup/engine-stub.mjs): these
// tests assert exactly what each task would send to Docker, and nothing pretends a container ran.

const COMPOSE_FILE = path.join(ROOT, 'infra/docker-compose.yml');
const F = ['compose', '-f', COMPOSE_FILE];
const PROBE = [['compose', 'version', '--short'], ['info', '--format', '{{.ServerVersion}}']];

interface Call {
  prog: string;
  argv: string[];
  env: Record<string, string>;
  stdin: string;
}

interface Stub {
  dir: string;
  log: string;
  env: Record<string, string>;
  calls(): Promise<Call[]>;
}

/** A bin directory whose `docker` (and, for v1-only, `docker-compose`) is the recording stub. */
async function dockerStub(mode: 'ok' | 'no-engine' | 'v1-only', extra: Record<string, string> = {}): Promise<Stub> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'docker-stub-'));
  const log = path.join(dir, 'calls.jsonl');
  await fs.writeFile(log, '');
  const stub = path.join(ROOT, 'test/setup/engine-stub.mjs');
  for (const prog of mode === 'v1-only' ? ['docker', 'docker-compose'] : ['docker']) {
    await fs.writeFile(path.join(dir, prog), `#!/bin/sh\nexec '${process.execPath}' '${stub}' ${prog} "$@"\n`, { mode: 0o755 });
  }
  return {
    dir,
    log,
    env: { PATH: `${dir}:${process.env.PATH}`, DOCKER_STUB_LOG: log, DOCKER_STUB_MODE: mode, ...extra },
    async calls() {
      const text = await fs.readFile(log, 'utf8');
      return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Call);
    },
  };
}

const passwords = async (p: Project) =>
  Promise.all(['postgres_password', 'migrate_password', 'app_password'].map((n) => fs.readFile(path.join(p.secretsDir, n), 'utf8')));

/** The task exits 0 and sends exactly `expected` to docker, after the engine probe; no password anywhere. */
async function sends(ctx: Ctx, task: string[], expected: string[][]) {
  const r = await run(ctx, task);
  assert.is(r.code, 0, `${task.join(' ')}: ${r.stdout}${r.stderr}`);
  const calls = await ctx.stub!.calls();
  assert.equal(calls.map((c) => c.argv), [...PROBE, ...expected]);
  await assertNoSecrets(ctx, calls);
  return { r, calls };
}

async function assertNoSecrets(ctx: Ctx, calls: Call[]) {
  for (const pw of await passwords(ctx.p!)) {
    for (const c of calls) {
      assert.not.ok(c.argv.some((a) => a.includes(pw)), `a password in docker's argv: ${c.argv.join(' ')}`);
      assert.not.ok(Object.values(c.env).some((v) => v.includes(pw)), `a password in docker's environment (${c.argv.join(' ')})`);
      assert.not.ok(c.stdin.includes(pw), `a password on docker's stdin (${c.argv.join(' ')})`);
    }
  }
}

async function run(ctx: Ctx, task: string[], runtime = 'docker'): Promise<CliResult> {
  await fs.writeFile(ctx.stub!.log, '');
  return cli(task, { ...ctx.p!.env, ...ctx.stub!.env, DB_RUNTIME: runtime });
}

interface Ctx {
  p?: Project;
  stub?: Stub;
}

// ---------------------------------------------------------------------------------------------
const tasks = suite<Ctx>('the docker runtime sends Compose v2 exactly these arguments');

setUp(tasks, async (ctx) => {
  ctx.p = await makeProject();
  // db:up ends with a real verified TLS login to 127.0.0.1:ENV_DB_PORT; a native server for this
  // project answers it, and the stub runs our admin-sql.sh on that server's socket for db-admin-sql.
  await startProject(ctx.p);
  ctx.stub = await dockerStub('ok', {
    DOCKER_STUB_SECRETS_DIR: ctx.p.secretsDir,
    DOCKER_STUB_PGHOST: nativePaths(ctx.p.nativeDir).run,
    DOCKER_STUB_PGPORT: String(ctx.p.port),
  });
});

tasks.after(async (ctx) => {
  await removeProject(ctx.p);
  if (ctx.stub) await fs.rm(ctx.stub.dir, { recursive: true, force: true });
});

tasks('db:up starts api-db and waits for it to be healthy, then provisions through db-admin-sql and logs in over TLS', async (ctx) => {
  const database = await fs.readFile(path.join(ctx.p!.secretsDir, 'postgres_db'), 'utf8');
  const { r, calls } = await sends(ctx, ['db:up'], [
    [...F, 'up', '--detach', '--wait', '--wait-timeout', '60', 'api-db'],
    // Roles (and whether the database exists) in one session, then ownership and grants inside
    // the database: the server already has the database, so no CREATE DATABASE call.
    [...F, 'exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql', 'postgres'],
    [...F, 'exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql', database],
  ]);
  assert.match(r.stdout + r.stderr, /PostgreSQL is up \(docker, 127\.0\.0\.1:\d+, TLS verified\)/);
  assert.ok(calls.slice(-2).every((c) => c.stdin.length > 0), 'each db-admin-sql call gets its SQL on stdin');
});

tasks('hands Compose the port and the state folders as absolute paths, on every compose call', async (ctx) => {
  const p = ctx.p!;
  // Given relative to the project root, as in .env.local: Compose would read them against infra/.
  const rel = (d: string) => path.relative(ROOT, d);
  await fs.writeFile(ctx.stub!.log, '');
  const r = await cli(['db:up'], {
    ...p.env, ...ctx.stub!.env, DB_RUNTIME: 'docker',
    DB_SECRETS_DIR: rel(p.secretsDir), DB_SSL_DIR: rel(p.sslDir), DB_MIGRATIONS_DIR: rel(p.migrationsDir),
  });
  assert.is(r.code, 0, r.stdout + r.stderr);
  const calls = (await ctx.stub!.calls()).filter((c) => c.argv[1] === '-f');
  assert.ok(calls.length >= 2);
  for (const c of calls) {
    assert.is(c.env.ENV_DB_PORT, String(p.port), c.argv.join(' '));
    assert.is(c.env.DB_SECRETS_DIR, p.secretsDir);
    assert.is(c.env.DB_SSL_DIR, p.sslDir);
    assert.is(c.env.DB_MIGRATIONS_DIR, p.migrationsDir);
    assert.is(c.argv[2], COMPOSE_FILE);
  }
});

tasks('db:down asks Compose whether api-db runs, then stops the project', async (ctx) => {
  await sends(ctx, ['db:down'], [[...F, 'ps', '--status', 'running', '--quiet', 'api-db'], [...F, 'down']]);
});

tasks('db:logs shows the last 100 lines of api-db through Compose, not by container name', async (ctx) => {
  await sends(ctx, ['db:logs'], [[...F, 'logs', '--tail', '100', 'api-db']]);
});

tasks('db:logs --follow keeps following', async (ctx) => {
  await sends(ctx, ['db:logs', '--follow'], [[...F, 'logs', '--follow', '--tail', '100', 'api-db']]);
});

tasks('db:bash opens bash in api-db', async (ctx) => {
  await sends(ctx, ['db:bash'], [[...F, 'exec', 'api-db', 'bash']]);
});

tasks('db:psql runs db-psql in api-db with the arguments after --, and no credentials', async (ctx) => {
  await sends(ctx, ['db:psql', '--', '-c', 'select 1'], [[...F, 'exec', 'api-db', '/usr/local/bin/db-psql', '-c', 'select 1']]);
});

tasks('db:migrate runs the db-migrate job with golang-migrate\'s word up', async (ctx) => {
  await sends(ctx, ['db:migrate'], [[...F, 'run', '--rm', '--no-deps', 'db-migrate', 'up']]);
});

tasks('db:migrate down 1 passes golang-migrate\'s words through', async (ctx) => {
  await sends(ctx, ['db:migrate', 'down', '1'], [[...F, 'run', '--rm', '--no-deps', 'db-migrate', 'down', '1']]);
});

tasks('db:migrate --single-transaction is refused in one line: golang-migrate has no such mode; nothing is sent', async (ctx) => {
  const r = await run(ctx, ['db:migrate', '--single-transaction']);
  assert.is(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /^error: --single-transaction needs the native runtime/m);
  assert.equal((await ctx.stub!.calls()).map((c) => c.argv), PROBE);
});

tasks('db:rollback rolls back one migration', async (ctx) => {
  await sends(ctx, ['db:rollback'], [[...F, 'run', '--rm', '--no-deps', 'db-migrate', 'down', '1']]);
});

tasks('db:migrate:force 3 --yes forces version 3', async (ctx) => {
  await sends(ctx, ['db:migrate:force', '3', '--yes'], [[...F, 'run', '--rm', '--no-deps', 'db-migrate', 'force', '3']]);
});

tasks('db:delete --yes --no-backup asks whether the server runs, then removes the containers and the volumes', async (ctx) => {
  // The safety backup itself (a pg_dump inside api-db) is covered by test/backup-docker.test.ts.
  await sends(ctx, ['db:delete', '--yes', '--no-backup'], [[...F, 'ps', '--status', 'running', '--quiet', 'api-db'], [...F, 'down', '--volumes', '--remove-orphans']]);
});

tasks('db:delete without a terminal and without --yes sends nothing beyond the probe', async (ctx) => {
  const r = await run(ctx, ['db:delete']);
  assert.is.not(r.code, 0);
  assert.equal((await ctx.stub!.calls()).map((c) => c.argv), PROBE);
});

tasks('DB_RUNTIME=auto chooses docker when the engine answers, and says so', async (ctx) => {
  const r = await run(ctx, ['db:logs'], 'auto');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /runtime: docker/);
  assert.equal((await ctx.stub!.calls()).map((c) => c.argv), [...PROBE, [...F, 'logs', '--tail', '100', 'api-db']]);
});

tasks.run();

// ---------------------------------------------------------------------------------------------
const missing = suite<Ctx>('without Compose v2 and an engine, DB_RUNTIME=docker stops with one line and the fix');

setUp(missing, async (ctx) => {
  ctx.p = await makeProject();
});

missing.after(async (ctx) => {
  await removeProject(ctx.p);
});

/** The error line, the hint line, a non-zero exit, no stack trace. */
function oneClearLine(r: CliResult, what: RegExp, fix: RegExp) {
  assert.is.not(r.code, 0, r.stdout + r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], what);
  assert.ok(lines.some((l) => /^hint: /.test(l) && fix.test(l)), r.stderr);
  assert.not.match(r.stderr, /\n\s+at /);
}

missing('no engine answering docker info is said, with the fix', async (ctx) => {
  const stub = await dockerStub('no-engine');
  try {
    const r = await cli(['db:logs'], { ...ctx.p!.env, ...stub.env, DB_RUNTIME: 'docker' });
    oneClearLine(r, /no Docker engine answers/, /start Docker|DB_RUNTIME=native/);
    assert.equal((await stub.calls()).map((c) => c.argv), PROBE, 'nothing is sent after the probe');
  } finally {
    await fs.rm(stub.dir, { recursive: true, force: true });
  }
});

missing('only Compose v1 (docker-compose) is refused, with the fix', async (ctx) => {
  const stub = await dockerStub('v1-only');
  try {
    const r = await cli(['db:logs'], { ...ctx.p!.env, ...stub.env, DB_RUNTIME: 'docker' });
    oneClearLine(r, /Compose v1/, /compose plugin|docker-compose-plugin|DB_RUNTIME=native/);
    const calls = await stub.calls();
    assert.equal(calls.map((c) => [c.prog, ...c.argv]), [['docker', 'compose', 'version', '--short'], ['docker-compose', 'version', '--short']]);
  } finally {
    await fs.rm(stub.dir, { recursive: true, force: true });
  }
});

missing('DB_RUNTIME=auto falls back to the native runtime when no engine answers, and says so', async (ctx) => {
  const stub = await dockerStub('no-engine');
  try {
    const r = await cli(['db:down'], { ...ctx.p!.env, ...stub.env, DB_RUNTIME: 'auto' });
    assert.is(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /runtime: native/);
    assert.equal((await stub.calls()).map((c) => c.argv), PROBE);
  } finally {
    await fs.rm(stub.dir, { recursive: true, force: true });
  }
});

missing.run();

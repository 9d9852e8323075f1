import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { makeProject, removeProject, cli, ok, startProject, ROOT, type Project } from './setup/project.ts';
import { failsClearly } from './setup/assert.ts';

const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

// ---------------------------------------------------------------------------------------------
const secrets = suite<{ p?: Project }>('a bad secret stops db:up before anything is made');

secrets.before.each(async (ctx) => {
  ctx.p = await makeProject();
  await ok(['db:secrets'], ctx.p.env);
  await ok(['db:secure'], ctx.p.env);
});
secrets.after.each(async (ctx) => removeProject(ctx.p));

const file = (p: Project, n = 'postgres_password') => path.join(p.secretsDir, n);

secrets('a missing secret names the file and the command that makes it', async ({ p }) => {
  await fs.rm(file(p!));
  failsClearly(await cli(['db:up'], p!.env), /postgres_password is missing/);
  assert.not.ok(await exists(p!.nativeDir), 'no data directory was created');
});

secrets('an empty secret is refused', async ({ p }) => {
  await fs.writeFile(file(p!), '', { mode: 0o600 });
  failsClearly(await cli(['db:up'], p!.env), /postgres_password is empty/);
  assert.not.ok(await exists(p!.nativeDir));
});

secrets('a secret ending in a newline is refused without printing it', async ({ p }) => {
  await fs.writeFile(file(p!), 'hunter2-but-longer\n', { mode: 0o600 });
  const r = await cli(['db:up'], p!.env);
  failsClearly(r, /ends with a newline/);
  assert.not.ok((r.stdout + r.stderr).includes('hunter2'));
  assert.not.ok(await exists(p!.nativeDir));
});

secrets('a secret others can read is refused with the chmod that fixes it', async ({ p }) => {
  await fs.chmod(file(p!, 'postgres_user'), 0o644);
  const r = await cli(['db:up'], p!.env);
  failsClearly(r, /postgres_user is readable by others/);
  assert.match(r.stderr, /hint: chmod 600 /);
});

secrets('db:secrets never overwrites an existing secret without --force', async ({ p }) => {
  const before = await fs.readFile(file(p!), 'utf8');
  const r = await ok(['db:secrets'], p!.env);
  assert.match(r.stdout, /kept postgres_user, postgres_password, postgres_db, migrate_user/);
  assert.is(await fs.readFile(file(p!), 'utf8'), before);
  await ok(['db:secrets', '--force', '--yes'], p!.env); // no cluster exists yet: --force may replace them, once answered
  assert.is.not(await fs.readFile(file(p!), 'utf8'), before);
});

secrets.run();

// ---------------------------------------------------------------------------------------------
const usage = suite('wrong flags and names');

usage('an unknown flag exits 2 and points at the task help', async () => {
  const r = await cli(['db:up', '--bogus'], { DB_RUNTIME: 'native' });
  failsClearly(r, /db:up: Unknown option '--bogus'/, { code: 2 });
  assert.match(r.stderr, /hint: pnpm run help db:up$/m);
});

usage('an unknown task exits 2', async () => {
  failsClearly(await cli(['db:nope'], {}), /unknown task "db:nope"/, { code: 2 });
});

usage('a non-numeric rollback count exits 2', async () => {
  const r = await cli(['db:rollback', 'two'], { DB_RUNTIME: 'native' });
  assert.is(r.code, 2);
  assert.match(r.stderr, /^error: N must be a positive whole number/);
});

usage('a bad setting names the variable', async () => {
  failsClearly(await cli(['db:secure'], { ENV_DB_PORT: '70000' }), /ENV_DB_PORT=70000 is not a whole number from 1 to 65535/);
  failsClearly(await cli(['db:up'], { DB_RUNTIME: 'kubernetes' }), /DB_RUNTIME=kubernetes is not one of docker, native, auto/);
  failsClearly(
    await cli(['db:status'], { COMPOSE_PROJECT_NAME: 'My Stack' }),
    /COMPOSE_PROJECT_NAME=My Stack is not a valid Compose project name/,
  );
  failsClearly(
    await cli(['db:status'], { DB_IMAGE: 'postgres:16 --privileged' }),
    /DB_IMAGE=postgres:16 --privileged is not an image reference/,
  );
});

usage('--target with a value other than compose or swarm is a usage error: exit 2, one error line, nothing run', async () => {
  for (const args of [
    ['db:status', '--target', 'kubernetes'],
    ['db:status', '--target=Swarm'],
    ['db:psql', '--target', 'nomad', '-c', 'SELECT 1'],
  ]) {
    const r = await cli(args, { DB_RUNTIME: 'native' });
    failsClearly(r, /--target "(kubernetes|Swarm|nomad)" is not one of compose, swarm/, { code: 2 });
    assert.match(r.stderr, /^hint: use --target compose or --target swarm$/m);
  }
});

usage('--target wins over DB_TARGET for one run', async () => {
  // swarm with DB_RUNTIME=native is refused by the configuration: proof that --target set DB_TARGET.
  failsClearly(await cli(['db:status', '--target', 'swarm'], { DB_RUNTIME: 'native' }), /DB_TARGET=swarm needs the docker runtime/);
  failsClearly(await cli(['db:status'], { DB_RUNTIME: 'native', DB_TARGET: 'nomad' }), /DB_TARGET=nomad is not one of/);
  const r = await cli(['db:status', '--target', 'compose'], { DB_RUNTIME: 'native', DB_TARGET: 'nomad' });
  assert.not.match(r.stderr, /DB_TARGET=nomad/, r.stderr);
});

usage('help lists every task from the registry', async () => {
  const r = await ok(['help'], {});
  for (const t of [
    'db:up',
    'db:down',
    'db:logs',
    'db:bash',
    'db:psql',
    'db:fresh',
    'db:delete',
    'db:secure',
    'db:secrets',
    'db:seed',
    'db:migrate',
    'db:rollback',
    'db:migrate:create',
    'db:migrate:force',
    'db:status',
  ]) {
    assert.match(r.stdout, new RegExp(`^  ${t} `, 'm'));
  }
});

usage('every db:* task in the registry is a root pnpm script', async () => {
  const pkg = JSON.parse(await fs.readFile(path.join(ROOT, 'package.json'), 'utf8'));
  const r = await ok(['help'], {});
  const names = [...r.stdout.matchAll(/^  (db:\S+)/gm)].map((m) => m[1]);
  for (const n of names) assert.is(pkg.scripts[n], `node dist/cli.js ${n}`, n);
});

usage.run();

// ---------------------------------------------------------------------------------------------
const env = suite<{ root?: string }>('.env files never hold secrets');

env.before(async (ctx) => {
  ctx.root = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-env-'));
});
env.after(async (ctx) => fs.rm(ctx.root!, { recursive: true, force: true }));

env('a password-like variable in .env.local stops every task and names it', async ({ root }) => {
  await fs.writeFile(path.join(root!, '.env.local'), 'DB_PASSWORD=s3cret-value\n');
  const r = await cli(['db:secure'], { DB_PROJECT_ROOT: root });
  failsClearly(r, /DB_PASSWORD is set in a \.env file/);
  assert.not.ok(r.stderr.includes('s3cret-value'));
});

env('the real environment wins over .env.<NODE_ENV>.local, which wins over .env', async ({ root }) => {
  await fs.writeFile(path.join(root!, '.env'), 'ENV_DB_PORT=1111\n');
  await fs.rm(path.join(root!, '.env.local'), { force: true });
  await fs.writeFile(path.join(root!, '.env.production.local'), 'ENV_DB_PORT=70001\n');
  // The port is validated: the file's value shows through the error, the real environment's does not.
  failsClearly(await cli(['db:secure'], { DB_PROJECT_ROOT: root, NODE_ENV: 'production' }), /ENV_DB_PORT=70001/);
  const r = await cli(['db:secure'], { DB_PROJECT_ROOT: root, NODE_ENV: 'production', ENV_DB_PORT: '70002' });
  failsClearly(r, /ENV_DB_PORT=70002/);
});

env.run();

// ---------------------------------------------------------------------------------------------
const running = suite<{ p?: Project }>('with a running server');

running.before(async (ctx) => {
  ctx.p = await makeProject();
  await startProject(ctx.p, { migrate: [] });
});
running.after(async (ctx) => removeProject(ctx.p));

running('a port taken by another process is named, with the variable that moves it', async ({ p }) => {
  const other = { ...p!.env, DB_NATIVE_DIR: path.join(p!.dir, 'other') };
  const r = await cli(['db:up'], other); // same port, a different cluster: the port is taken by ours
  failsClearly(r, new RegExp(`port ${p!.port} on 127.0.0.1 is taken`));
  assert.match(r.stderr, /ENV_DB_PORT/);
  assert.not.ok(await exists(path.join(p!.dir, 'other', 'data')), 'nothing initialised');
});

running('a taken port is detected for a server that is not PostgreSQL too', async ({ p }) => {
  const srv = net.createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
  const port = (srv.address() as net.AddressInfo).port;
  try {
    const r = await cli(['db:up'], { ...p!.env, ENV_DB_PORT: String(port), DB_NATIVE_DIR: path.join(p!.dir, 'third') });
    failsClearly(r, new RegExp(`port ${port} on 127.0.0.1 is taken`));
  } finally {
    srv.close();
  }
});

for (const [task, args] of [
  ['db:delete', []],
  ['db:fresh', []],
  ['db:migrate:force', ['1']],
] as const) {
  running(`${task} without a terminal and without --yes refuses and keeps the data`, async ({ p }) => {
    const r = await cli([task, ...args], p!.env);
    failsClearly(r, new RegExp(`${task} needs confirmation and there is no terminal`));
    assert.match(r.stderr, /--yes/);
    assert.ok(await exists(path.join(p!.nativeDir, 'data', 'PG_VERSION')));
    const s = await ok(['db:status', '--json'], p!.env);
    assert.is(JSON.parse(s.stdout).version, 1);
  });
}

running('db:delete --dry-run names what it would delete and deletes nothing', async ({ p }) => {
  const r = await ok(['db:delete', '--dry-run'], p!.env);
  assert.match(r.stdout, /would delete the native data directory/);
  assert.ok(await exists(path.join(p!.nativeDir, 'data', 'PG_VERSION')));
});

running('db:delete --yes --no-backup stops the server and removes its data', async ({ p }) => {
  // Without --no-backup it first takes a safety backup (test/guard.test.ts covers that path).
  await ok(['db:delete', '--yes', '--no-backup'], p!.env);
  assert.not.ok(await exists(p!.nativeDir));
});

running.run();

// ---------------------------------------------------------------------------------------------
const broken = suite<{ p?: Project }>('a server that cannot start');

broken.before(async (ctx) => {
  ctx.p = await makeProject();
  await startProject(ctx.p);
  await ok(['db:down'], ctx.p.env);
});
broken.after(async (ctx) => removeProject(ctx.p));

broken("db:up reports the server's FATAL line instead of waiting out its timeout", async ({ p }) => {
  // A broken setting the postmaster refuses at start-up, written where ALTER SYSTEM would.
  await fs.appendFile(path.join(p!.nativeDir, 'data', 'postgresql.auto.conf'), "shared_buffers = 'lots'\n");
  const r = await cli(['db:up'], { ...p!.env, DB_UP_TIMEOUT: '600' });
  failsClearly(r, /PostgreSQL failed to start: .*(FATAL|invalid value)/);
  assert.match(r.stderr, /hint: see .*postgres\.log/);
});

broken.run();

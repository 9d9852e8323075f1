import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import {
  makeProject,
  ok,
  readSecretFile,
  removeProject,
  startProject,
  ROOT,
  withStartedProject,
  type CliResult,
  type Project,
  otherCa,
} from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// The scripts that run inside the containers, run here for real: against a native PostgreSQL 16
// started for the test, with their secrets directory pointed at the project's. Only what cannot
// run here is a stub: `migrate` and `docker-entrypoint.sh` (images we do not have), which record
// the arguments and environment they were given.

const SCRIPTS = path.join(ROOT, 'database/infra/scripts');
const script = (name: string) => path.join(SCRIPTS, name);
const SQL_SSL = 'SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';
// libpq variables from the test's own environment must not help a script connect.
const NO_PG = {
  PGHOST: undefined,
  PGPORT: undefined,
  PGUSER: undefined,
  PGDATABASE: undefined,
  PGPASSWORD: undefined,
  PGSSLMODE: undefined,
  PGSSLROOTCERT: undefined,
  PGSERVICE: undefined,
};

/**
 * Runs a program with the test's environment plus `env` (undefined removes a variable), its stdin
 * fed `input` or closed: a script that exits at once never meets a write to its closed stdin.
 */
function run(
  cmd: string,
  args: string[],
  env: { [k: string]: string | undefined },
  opts: { input?: string; uid?: number; gid?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const full: { [k: string]: string | undefined } = { ...process.env, ...env };
    for (const k of Object.keys(full)) if (full[k] === undefined) delete full[k];
    const child = spawn(cmd, args, {
      env: full as NodeJS.ProcessEnv,
      cwd: ROOT,
      uid: opts.uid,
      gid: opts.gid,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    if (child.stdin) {
      child.stdin.on('error', () => {}); // the script may rightly exit before reading it all
      child.stdin.end(opts.input);
    }
  });
}

interface Recorded {
  argv: string[];
  env: { [k: string]: string };
}

/** A bin directory of recording stubs: each named program appends { argv, env } to its record file. */
async function stubs(names: string[]) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'script-stubs-'));
  for (const name of names) {
    const body = `#!${process.execPath}\nrequire('fs').appendFileSync(${JSON.stringify(path.join(dir, `${name}.jsonl`))}, JSON.stringify({ argv: process.argv.slice(2), env: process.env }) + '\\n');\n`;
    await fs.writeFile(path.join(dir, name), body, { mode: 0o755 });
  }
  return {
    dir,
    async records(name: string): Promise<Recorded[]> {
      const text = await fs.readFile(path.join(dir, `${name}.jsonl`), 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Recorded);
    },
    async clear(name: string) {
      await fs.rm(path.join(dir, `${name}.jsonl`), { force: true });
    },
  };
}
type Stubs = Awaited<ReturnType<typeof stubs>>;

/** Recording stubs for `names` (ctx.stubs) before the suite; after it, removed. */
function withStubs<T extends { stubs?: Stubs }>(s: Test<T>, names: string[]): void {
  setUp(s, async (ctx) => {
    ctx.stubs = await stubs(names);
  });
  s.after(async (ctx) => {
    if (ctx.stubs) await fs.rm(ctx.stubs.dir, { recursive: true, force: true });
  });
}

/** A directory whose sh, od, tr, cat and printf are busybox's: the migrate/migrate image's userland. */
async function busyboxBin(): Promise<string> {
  const which = await run('sh', ['-c', 'command -v busybox'], {});
  if (which.code !== 0) throw new Error('busybox is not installed (apt-get install -y busybox): the migrate image has only busybox sh');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'busybox-'));
  for (const applet of ['sh', 'od', 'tr', 'cat', 'printf']) await fs.symlink(which.stdout.trim(), path.join(dir, applet));
  return dir;
}

/** Exactly one line on stderr, naming `what` and saying how to fix it. */
function oneLine(r: CliResult, what: RegExp, fix: RegExp) {
  assert.is.not(r.code, 0);
  const lines = r.stderr.trim().split('\n');
  assert.is(lines.length, 1, r.stderr);
  assert.match(lines[0], what);
  assert.match(lines[0], fix);
}

/** Copies the project's secrets into a fresh directory, with `changes` applied (null removes a file). */
async function secretsWith(p: Project, changes: { [name: string]: string | null }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(p.dir, 'secrets-copy-'));
  for (const f of await fs.readdir(p.secretsDir)) await fs.copyFile(path.join(p.secretsDir, f), path.join(dir, f));
  for (const [name, value] of Object.entries(changes)) {
    if (value === null) await fs.rm(path.join(dir, name));
    else await fs.writeFile(path.join(dir, name), value, { mode: 0o600 });
  }
  return dir;
}

const SCRIPT_NAMES = ['start.sh', 'healthcheck.sh', 'run-migration.sh', 'psql.sh', 'admin-sql.sh', 'db-secrets.sh', 'replica-start.sh'];

// ---------------------------------------------------------------------------------------------
const lint = suite('the container scripts under shellcheck');

for (const name of SCRIPT_NAMES) {
  lint(`${name} passes shellcheck`, async () => {
    const r = await run('shellcheck', ['-x', script(name)], {});
    assert.is(r.code, 0, r.stdout + r.stderr);
  });
}

lint('every script is a POSIX sh script committed executable', async () => {
  const r = await run('git', ['ls-files', '-s', '--', 'database/infra/scripts'], {});
  const modes = Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => [path.basename(l.split('\t')[1]), l.split(' ')[0]]),
  );
  for (const name of SCRIPT_NAMES) {
    assert.is(modes[name], '100755', name);
    assert.match(await fs.readFile(script(name), 'utf8'), /^#!\/bin\/sh\n/);
  }
});

lint.run();

// ---------------------------------------------------------------------------------------------
const encode = suite<{ fn: string; bb: string }>('urlencode in run-migration.sh');

setUp(encode, async (ctx) => {
  const text = await fs.readFile(script('run-migration.sh'), 'utf8');
  ctx.fn = /^urlencode\(\) \{\n[\s\S]*?^\}\n/m.exec(text)![0];
  ctx.bb = await busyboxBin();
});

encode.after(async (ctx) => {
  if (ctx.bb) await fs.rm(ctx.bb, { recursive: true, force: true });
});

/** Runs the function alone, in dash or (with bb) busybox sh with only busybox tools on PATH. */
async function urlencode(ctx: { fn: string; bb: string }, value: string, bb = false): Promise<string> {
  const r = bb
    ? await run(path.join(ctx.bb, 'sh'), ['-c', `${ctx.fn}urlencode "$1"`, 'sh', value], { PATH: ctx.bb })
    : await run('sh', ['-c', `${ctx.fn}urlencode "$1"`, 'sh', value], {});
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stderr, '');
  return r.stdout;
}

/** RFC 3986: everything but ALPHA / DIGIT / "-" / "." / "_" / "~" is percent-encoded. */
const strict = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

encode('keeps the unreserved characters as they are', async (ctx) => {
  const s = 'AZaz09-._~';
  assert.is(await urlencode(ctx, s), s);
});

encode('percent-encodes reserved characters, space and percent in upper-case hex', async (ctx) => {
  assert.is(await urlencode(ctx, '@:/?#%& +'), '%40%3A%2F%3F%23%25%26%20%2B');
});

encode('encodes non-ASCII characters byte by byte from UTF-8', async (ctx) => {
  assert.is(await urlencode(ctx, 'é€'), '%C3%A9%E2%82%AC');
});

encode('agrees with a strict RFC 3986 encoder on every printable ASCII character', async (ctx) => {
  let all = '';
  for (let c = 0x20; c < 0x7f; c++) all += String.fromCharCode(c);
  assert.is(await urlencode(ctx, all), strict(all));
});

encode('gives the same answers in busybox sh with only busybox tools', async (ctx) => {
  const s = ' !"#$%&\'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~é€';
  assert.is(await urlencode(ctx, s, true), strict(s));
});

encode('prints nothing for an empty string', async (ctx) => {
  assert.is(await urlencode(ctx, ''), '');
});

encode.run();

// ---------------------------------------------------------------------------------------------
interface MigrateCtx {
  p?: Project;
  stubs?: Stubs;
  bb?: string;
  /** What the first run handed `migrate`. */
  rec?: Recorded;
}

/** A password with every character a URL reserves, a space, a percent sign and non-ASCII. */
const PASSWORD = 'p@ss:w/rd?#%& +é€';
const migration = suite<MigrateCtx>('run-migration.sh (the db-migrate entrypoint) against a real server');

setUp(migration, async (ctx) => {
  ctx.p = await makeProject();
  await ok(['db:secrets'], ctx.p.env);
  await fs.writeFile(path.join(ctx.p.secretsDir, 'migrate_password'), PASSWORD, { mode: 0o600 });
  await startProject(ctx.p); // creates the migration role with the password above
  ctx.stubs = await stubs(['migrate']);
  ctx.bb = await busyboxBin();
});

migration.after(async (ctx) => {
  await removeProject(ctx.p);
  for (const d of [ctx.stubs?.dir, ctx.bb]) if (d) await fs.rm(d, { recursive: true, force: true });
});

/** Runs run-migration.sh as db-migrate would, but aimed at the project's server from this host. */
async function runMigration(ctx: MigrateCtx, args: string[], env: { [k: string]: string | undefined } = {}, shell = 'sh') {
  const p = ctx.p!;
  await ctx.stubs!.clear('migrate');
  return run(shell, [script('run-migration.sh'), ...args], {
    ...NO_PG,
    PATH: `${ctx.stubs!.dir}:${process.env.PATH}`,
    SECRETS_DIR: p.secretsDir,
    DB_HOST: 'localhost',
    DB_PORT: String(p.port),
    DB_CA_FILE: path.join(p.sslDir, 'ca.crt'),
    ...env,
  });
}

/** psql (a client we did not write) given exactly the URL the script built, and a password by environment. */
const psqlUrl = (url: string, password: string) =>
  run('psql', [url, '-X', '-A', '-t', '-c', SQL_SSL], { ...NO_PG, PGPASSWORD: password, PGCONNECT_TIMEOUT: '5' });

migration('hands migrate -path, -database URL and the command words, with the password nowhere in argv', async (ctx) => {
  const r = await runMigration(ctx, ['up']);
  assert.is(r.code, 0, r.stderr);
  const recs = await ctx.stubs!.records('migrate');
  assert.is(recs.length, 1);
  ctx.rec = recs[0];
  const { argv } = ctx.rec;
  assert.is(argv.length, 5);
  assert.equal([argv[0], argv[1], argv[2], argv[4]], ['-path', '/migrations', '-database', 'up']);
  for (const a of argv) {
    assert.not.ok(a.includes(PASSWORD), 'the password is in argv');
    assert.not.ok(a.includes(encodeURIComponent(PASSWORD)), 'the encoded password is in argv');
  }
  const url = new URL(argv[3]);
  assert.is(url.password, '');
  assert.is(url.username, await readSecretFile(ctx.p!, 'migrate_user'));
  assert.is(url.searchParams.get('sslmode'), 'verify-full');
  assert.is(url.searchParams.get('sslrootcert'), path.join(ctx.p!.sslDir, 'ca.crt'));
});

migration('exports the password in PGPASSWORD, byte for byte', (ctx) => {
  assert.is(ctx.rec!.env.PGPASSWORD, PASSWORD);
});

migration('builds a URL that psql accepts over verify-full TLS, as the migration role', async (ctx) => {
  const r = await psqlUrl(ctx.rec!.argv[3], ctx.rec!.env.PGPASSWORD);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), `${await readSecretFile(ctx.p!, 'migrate_user')}|t`);
});

migration('logs in only with that password: the URL carries none of its own', async (ctx) => {
  const r = await psqlUrl(ctx.rec!.argv[3], 'not the password');
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /password authentication failed/);
});

migration('names the CA in the URL: a CA that did not sign the server is refused', async (ctx) => {
  const r = await runMigration(ctx, ['up'], { DB_CA_FILE: await otherCa(path.join(ctx.p!.dir, 'other-ca')) });
  assert.is(r.code, 0, r.stderr);
  const [rec] = await ctx.stubs!.records('migrate');
  const login = await psqlUrl(rec.argv[3], rec.env.PGPASSWORD);
  assert.is.not(login.code, 0);
  assert.match(login.stderr, /certificate verify failed/);
});

migration("passes golang-migrate's words through and honours MIGRATIONS_DIR", async (ctx) => {
  await runMigration(ctx, ['down', '1'], { MIGRATIONS_DIR: '/elsewhere' });
  const [rec] = await ctx.stubs!.records('migrate');
  assert.equal(rec.argv.slice(0, 2), ['-path', '/elsewhere']);
  assert.equal(rec.argv.slice(4), ['down', '1']);
});

migration('defaults to api-db:5432, as inside the compose network', async (ctx) => {
  await runMigration(ctx, ['up'], { DB_HOST: undefined, DB_PORT: undefined });
  const [rec] = await ctx.stubs!.records('migrate');
  assert.is(new URL(rec.argv[3]).host, 'api-db:5432');
});

migration('refuses a missing CA certificate (by default the ca_crt secret) with one line, and runs nothing', async (ctx) => {
  const r = await runMigration(ctx, ['up'], { DB_CA_FILE: undefined });
  oneLine(r, /CA certificate \/run\/secrets\/ca_crt is missing or empty/, /pnpm db:secure/);
  assert.is((await ctx.stubs!.records('migrate')).length, 0);
});

migration('percent-encodes user and database names in the URL', async (ctx) => {
  const dir = await secretsWith(ctx.p!, { migrate_user: 'ü@x:y/z', postgres_db: 'my db?#%' });
  const r = await runMigration(ctx, ['up'], { SECRETS_DIR: dir });
  assert.is(r.code, 0, r.stderr);
  const [rec] = await ctx.stubs!.records('migrate');
  const url = new URL(rec.argv[3]);
  assert.is(url.username, '%C3%BC%40x%3Ay%2Fz');
  assert.is(decodeURIComponent(url.username), 'ü@x:y/z');
  assert.is(decodeURIComponent(url.pathname.slice(1)), 'my db?#%');
});

migration('runs the same in busybox sh with only busybox tools, as in the migrate/migrate image', async (ctx) => {
  const r = await runMigration(ctx, ['up'], { PATH: `${ctx.stubs!.dir}:${ctx.bb}` }, path.join(ctx.bb!, 'sh'));
  assert.is(r.code, 0, r.stderr);
  const [rec] = await ctx.stubs!.records('migrate');
  assert.equal(rec.argv, ctx.rec!.argv);
  assert.is(rec.env.PGPASSWORD, PASSWORD);
});

migration('refuses a missing secret with one line naming it, and runs nothing', async (ctx) => {
  const dir = await secretsWith(ctx.p!, { migrate_password: null });
  const r = await runMigration(ctx, ['up'], { SECRETS_DIR: dir });
  oneLine(r, /migrate_password is missing or empty/, /pnpm db:secrets/);
  assert.is((await ctx.stubs!.records('migrate')).length, 0);
});

migration('refuses an empty secret the same way', async (ctx) => {
  const dir = await secretsWith(ctx.p!, { migrate_user: '' });
  const r = await runMigration(ctx, ['up'], { SECRETS_DIR: dir });
  oneLine(r, /migrate_user is missing or empty/, /pnpm db:secrets/);
  assert.is((await ctx.stubs!.records('migrate')).length, 0);
});

migration.run();

// ---------------------------------------------------------------------------------------------
const health = suite<{ p?: Project; stubs?: Stubs }>('healthcheck.sh (the api-db healthcheck) against a real server');

withStartedProject(health);
withStubs(health, ['pg_isready']);

const healthcheck = (p: Project, env: { [k: string]: string } = {}) =>
  run('sh', [script('healthcheck.sh')], { ...NO_PG, SECRETS_DIR: p.secretsDir, PGPORT: String(p.port), ...env });

health('exits 0 while the server accepts connections', async ({ p }) => {
  const r = await healthcheck(p!);
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /accepting connections/);
});

health('asks over TCP on 127.0.0.1, as the application role, in the application database', async ({ p, stubs: s }) => {
  await healthcheck(p!, { PATH: `${s!.dir}:${process.env.PATH}` });
  const [rec] = await s!.records('pg_isready');
  assert.equal(rec.argv, [
    '-h',
    '127.0.0.1',
    '-p',
    String(p!.port),
    '-U',
    await readSecretFile(p!, 'app_user'),
    '-d',
    await readSecretFile(p!, 'postgres_db'),
  ]);
});

health('leaves no FATAL line in the server log, check after check', async ({ p }) => {
  const log = nativePaths(p!.nativeDir).log;
  const before = (await fs.readFile(log, 'utf8')).length;
  for (let i = 0; i < 3; i++) assert.is((await healthcheck(p!)).code, 0);
  const added = (await fs.readFile(log, 'utf8')).slice(before);
  assert.not.match(added, /FATAL/);
});

health('would leave a FATAL line at every check as a role refused over TCP, which is why it names the application role', async ({ p }) => {
  const log = nativePaths(p!.nativeDir).log;
  const before = (await fs.readFile(log, 'utf8')).length;
  const su = await readSecretFile(p!, 'postgres_user');
  assert.is((await healthcheck(p!, { SECRETS_DIR: await secretsWith(p!, { app_user: su }) })).code, 0, 'the server still counts as up');
  const added = (await fs.readFile(log, 'utf8')).slice(before);
  assert.match(added, /FATAL: {2}pg_hba\.conf rejects connection/);
});

health('refuses an empty secret with one line naming it', async ({ p }) => {
  const r = await healthcheck(p!, { SECRETS_DIR: await secretsWith(p!, { app_user: '' }) });
  oneLine(r, /app_user is missing or empty/, /pnpm db:secrets/);
});

health('refuses a missing secret with one line naming it', async ({ p }) => {
  const r = await healthcheck(p!, { SECRETS_DIR: await secretsWith(p!, { postgres_db: null }) });
  oneLine(r, /postgres_db is missing or empty/, /pnpm db:secrets/);
});

health('exits non-zero once the server has stopped', async ({ p }) => {
  await ok(['db:down'], p!.env);
  const r = await healthcheck(p!);
  assert.is.not(r.code, 0);
  assert.match(r.stdout, /no response/);
});

health.run();

// ---------------------------------------------------------------------------------------------
const psql = suite<{ p?: Project; stubs?: Stubs }>('psql.sh (db-psql in api-db) against a real server');

withStartedProject(psql);
withStubs(psql, ['psql']);

// TLS_DIR stands for /etc/postgresql/tls, where start.sh installs ca.crt inside the container.
const dbPsql = (p: Project, args: string[], env: { [k: string]: string } = {}) =>
  run('sh', [script('psql.sh'), ...args], {
    ...NO_PG,
    SECRETS_DIR: p.secretsDir,
    TLS_DIR: p.sslDir,
    PGPORT: String(p.port),
    PGCONNECT_TIMEOUT: '5',
    ...env,
  });

psql("logs in as the application role over verified TLS, with the caller's psql arguments", async ({ p }) => {
  const r = await dbPsql(p!, ['-X', '-A', '-t', '-c', SQL_SSL]);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), `${await readSecretFile(p!, 'app_user')}|t`);
});

psql('refuses a server its CA did not sign', async ({ p }) => {
  const ca = await otherCa(path.join(p!.dir, 'other-tls'));
  const r = await dbPsql(p!, ['-X', '-c', 'SELECT 1'], { TLS_DIR: path.dirname(ca) });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /certificate verify failed/);
});

psql("hands psql exactly the caller's arguments; the password goes by environment only", async ({ p, stubs: s }) => {
  const args = ['-c', 'select 1', '--csv'];
  const r = await dbPsql(p!, args, { PATH: `${s!.dir}:${process.env.PATH}` });
  assert.is(r.code, 0, r.stderr);
  const [rec] = await s!.records('psql');
  assert.equal(rec.argv, args);
  assert.is(rec.env.PGPASSWORD, await readSecretFile(p!, 'app_password'));
  assert.is(rec.env.PGSSLMODE, 'verify-full');
  assert.is(rec.env.PGSSLROOTCERT, path.join(p!.sslDir, 'ca.crt'));
  assert.is(rec.env.PGHOST, 'localhost');
});

psql('refuses a missing secret with one line naming it', async ({ p }) => {
  const r = await dbPsql(p!, ['-c', 'SELECT 1'], { SECRETS_DIR: await secretsWith(p!, { app_password: null }) });
  oneLine(r, /app_password is missing or empty/, /pnpm db:secrets/);
});

psql.run();

// ---------------------------------------------------------------------------------------------
const admin = suite<{ p?: Project }>('admin-sql.sh (db-admin-sql in api-db) against a real server');

withStartedProject(admin);

// PGHOST stands for /var/run/postgresql: the native server's socket directory.
const adminSql = (p: Project, sql: string, args: string[] = [], env: { [k: string]: string } = {}) =>
  run(
    'sh',
    [script('admin-sql.sh'), ...args],
    { ...NO_PG, SECRETS_DIR: p.secretsDir, PGHOST: nativePaths(p.nativeDir).run, PGPORT: String(p.port), ...env },
    { input: sql },
  );

admin('runs the SQL on stdin as the superuser, over the socket: one row a line, fields split by 0x1f', async ({ p }) => {
  const r = await adminSql(p!, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user; SELECT 'a b', '', 'c';\n");
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, `${await readSecretFile(p!, 'postgres_user')}\x1ft\na b\x1f\x1fc\n`);
  const sock = await adminSql(p!, 'SELECT inet_server_addr() IS NULL');
  assert.is(sock.stdout, 't\n', 'a Unix socket has no server address');
});

admin('prints nothing for statements without rows', async ({ p }) => {
  const r = await adminSql(p!, "DO $$ BEGIN PERFORM 1; END $$; SET application_name = 'x';");
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, '');
});

admin('connects to the database its argument names, postgres by default', async ({ p }) => {
  const db = await readSecretFile(p!, 'postgres_db');
  assert.is((await adminSql(p!, 'SELECT current_database()', [db])).stdout, `${db}\n`);
  assert.is((await adminSql(p!, 'SELECT current_database()')).stdout, 'postgres\n');
});

admin('stops at the first error with a non-zero exit', async ({ p }) => {
  const r = await adminSql(p!, "SELECT 1/0; SELECT 'after';");
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /division by zero/);
  assert.not.match(r.stdout, /after/);
});

admin('refuses a missing secret with one line naming it', async ({ p }) => {
  const r = await adminSql(p!, 'SELECT 1', [], { SECRETS_DIR: await secretsWith(p!, { postgres_password: null }) });
  oneLine(r, /postgres_password is missing or empty/, /pnpm db:secrets/);
});

admin.run();

// ---------------------------------------------------------------------------------------------
interface StartCtx {
  dir?: string;
  stubs?: Stubs;
  src?: string;
  tls?: string;
  postgres?: { uid: number; gid: number };
}

const start = suite<StartCtx>('start.sh (the api-db entrypoint), run as root with a stub docker-entrypoint.sh');

setUp(start, async (ctx) => {
  ctx.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'db-start-'));
  ctx.stubs = await stubs(['docker-entrypoint.sh']);
  // The secrets as Compose mounts them: the host's files, owner and mode.
  ctx.src = path.join(ctx.dir, 'run-secrets');
  await fs.mkdir(ctx.src);
  await fs.writeFile(path.join(ctx.src, 'server_key'), 'the key', { mode: 0o600 });
  await fs.writeFile(path.join(ctx.src, 'server_crt'), 'the certificate', { mode: 0o644 });
  await fs.writeFile(path.join(ctx.src, 'ca_crt'), 'the CA', { mode: 0o644 });
  ctx.tls = path.join(ctx.dir, 'etc-postgresql-tls');
  const id = async (flag: string) => Number((await run('id', [flag, 'postgres'], {})).stdout.trim());
  ctx.postgres = { uid: await id('-u'), gid: await id('-g') };
  assert.ok(ctx.postgres.uid > 0, 'a postgres user exists');
});

start.after(async (ctx) => {
  for (const d of [ctx.dir, ctx.stubs?.dir]) if (d) await fs.rm(d, { recursive: true, force: true });
});

start.before.each(async (ctx) => {
  await fs.rm(ctx.tls!, { recursive: true, force: true });
  await ctx.stubs!.clear('docker-entrypoint.sh');
});

const dbStart = (ctx: StartCtx, args: string[] = [], env: { [k: string]: string } = {}) =>
  run('sh', [script('start.sh'), ...args], {
    PATH: `${ctx.stubs!.dir}:${process.env.PATH}`,
    TLS_SOURCE_DIR: ctx.src!,
    TLS_DIR: ctx.tls!,
    ...env,
  });

start('installs the key 0600 and the certificates 0644, all owned by postgres', async (ctx) => {
  const r = await dbStart(ctx);
  assert.is(r.code, 0, r.stderr);
  for (const [file, mode, body] of [
    ['server.key', 0o600, 'the key'],
    ['server.crt', 0o644, 'the certificate'],
    ['ca.crt', 0o644, 'the CA'],
  ] as const) {
    const st = await fs.stat(path.join(ctx.tls!, file));
    assert.is(st.mode & 0o777, mode, file);
    assert.equal([st.uid, st.gid], [ctx.postgres!.uid, ctx.postgres!.gid], file);
    assert.is(await fs.readFile(path.join(ctx.tls!, file), 'utf8'), body);
  }
});

start("leaves the host's key file as it was: owner root, mode 0600", async (ctx) => {
  await dbStart(ctx);
  const st = await fs.stat(path.join(ctx.src!, 'server_key'));
  assert.equal([st.uid, st.mode & 0o777], [0, 0o600]);
});

start("hands over to the image's entrypoint: postgres with our configuration file", async (ctx) => {
  await dbStart(ctx);
  const recs = await ctx.stubs!.records('docker-entrypoint.sh');
  assert.equal(
    recs.map((r) => r.argv),
    [['postgres', '-c', 'config_file=/etc/postgresql/postgresql.conf']],
  );
});

start('passes extra arguments on to postgres', async (ctx) => {
  await dbStart(ctx, ['-c', 'log_statement=ddl']);
  const [rec] = await ctx.stubs!.records('docker-entrypoint.sh');
  assert.equal(rec.argv, ['postgres', '-c', 'config_file=/etc/postgresql/postgresql.conf', '-c', 'log_statement=ddl']);
});

start('with --install-tls-only, installs the files and starts nothing (a renewed certificate, then a reload)', async (ctx) => {
  const r = await dbStart(ctx, ['--install-tls-only']);
  assert.is(r.code, 0, r.stderr);
  assert.is((await fs.stat(path.join(ctx.tls!, 'server.key'))).mode & 0o777, 0o600);
  assert.is((await ctx.stubs!.records('docker-entrypoint.sh')).length, 0);
});

start('refuses a missing key with one line naming pnpm db:secure, and starts nothing', async (ctx) => {
  const src = path.join(ctx.dir!, 'no-key');
  await fs.mkdir(src, { recursive: true });
  const r = await dbStart(ctx, [], { TLS_SOURCE_DIR: src });
  oneLine(r, /server_key is missing or empty/, /pnpm db:secure/);
  assert.is((await ctx.stubs!.records('docker-entrypoint.sh')).length, 0);
});

start('refuses to run as another user than root, with one line and the fix', async (ctx) => {
  const r = await run(
    'sh',
    [script('start.sh')],
    { PATH: `${ctx.stubs!.dir}:${process.env.PATH}`, TLS_SOURCE_DIR: ctx.src!, TLS_DIR: ctx.tls! },
    ctx.postgres,
  );
  oneLine(r, /must run as root/, /remove "user:"/);
  assert.is((await ctx.stubs!.records('docker-entrypoint.sh')).length, 0);
});

start.run();

// ---------------------------------------------------------------------------------------------
interface ReplicaCtx {
  dir?: string;
  bin?: string;
  secrets?: string;
  postgres?: { uid: number; gid: number };
}

const replicaStart = suite<ReplicaCtx>(
  'replica-start.sh (the api-db-replica entrypoint), run as root beside a stub db-start, with a stub pg_basebackup',
);

// A password with the characters a libpq password file escapes.
const REPL_PASSWORD = 'pa:ss\\word';

setUp(replicaStart, async (ctx) => {
  ctx.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'db-replica-start-'));
  await fs.chmod(ctx.dir, 0o755);
  // The mounted layout: the script beside db-secrets.sh and db-start (a stub recording its arguments).
  ctx.bin = path.join(ctx.dir, 'bin');
  await fs.mkdir(ctx.bin, { mode: 0o755 });
  await fs.copyFile(script('replica-start.sh'), path.join(ctx.bin, 'db-replica-start'));
  await fs.copyFile(script('db-secrets.sh'), path.join(ctx.bin, 'db-secrets.sh'));
  await fs.writeFile(path.join(ctx.bin, 'db-start'), `#!/bin/sh\nprintf '%s\\n' "$*" >>"${ctx.dir}/db-start.calls"\n`, { mode: 0o755 });
  // pg_basebackup, run as postgres: a data directory with a primary's postgresql.auto.conf, and what it was given.
  await fs.writeFile(
    path.join(ctx.bin, 'pg_basebackup'),
    `#!/bin/sh
for a; do case "$a" in --pgdata=*) d="\${a#--pgdata=}" ;; esac; done
[ -z "\${FAIL_BASEBACKUP:-}" ] || { echo 'pg_basebackup: error: could not connect' >&2; exit 1; }
echo 16 >"$d/PG_VERSION"
printf "synchronous_standby_names = 'pgdeploy_standby'\\nwork_mem = '8MB'\\n" >"$d/postgresql.auto.conf"
printf '%s\\n' "$@" >"$d/argv"
env >"$d/env"
id -un >"$d/user"
`,
    { mode: 0o755 },
  );
  ctx.secrets = path.join(ctx.dir, 'secrets');
  await fs.mkdir(ctx.secrets, { mode: 0o700 });
  await fs.writeFile(path.join(ctx.secrets, 'replication_user'), 'pgdeploy_replicator', { mode: 0o600 });
  await fs.writeFile(path.join(ctx.secrets, 'replication_password'), REPL_PASSWORD, { mode: 0o600 });
  const id = async (flag: string) => Number((await run('id', [flag, 'postgres'], {})).stdout.trim());
  ctx.postgres = { uid: await id('-u'), gid: await id('-g') };
});

replicaStart.after(async (ctx) => {
  if (ctx.dir) await fs.rm(ctx.dir, { recursive: true, force: true });
});

/** Runs the entrypoint on a fresh volume (or `volume`), its TLS step and server start being the db-start stub. */
async function replicaEntrypoint(ctx: ReplicaCtx, volume: string, env: { [k: string]: string } = {}, args: string[] = []) {
  await fs.mkdir(volume, { recursive: true, mode: 0o755 });
  return run('sh', [path.join(ctx.bin!, 'db-replica-start'), ...args], {
    ...NO_PG,
    PATH: `${ctx.bin}:${process.env.PATH}`,
    SECRETS_DIR: ctx.secrets!,
    PASS_DIR: path.join(volume, 'tmpfs'),
    PGDATA: path.join(volume, 'pgdata'),
    PGPASSWORD: 'from-the-image-environment',
    ...env,
  });
}

replicaStart(
  'on an empty PGDATA: a base backup as postgres over verify-full through the slot, then standby.signal and primary_conninfo',
  async (ctx) => {
    const vol = path.join(ctx.dir!, 'fresh');
    const r = await replicaEntrypoint(ctx, vol, {}, ['-c', 'log_statement=ddl']);
    assert.is(r.code, 0, r.stderr);
    const data = path.join(vol, 'pgdata');
    const argv = (await fs.readFile(path.join(data, 'argv'), 'utf8')).trim().split('\n');
    assert.is(await fs.readFile(path.join(data, 'user'), 'utf8'), 'postgres\n', 'pg_basebackup runs as postgres');
    assert.ok(
      argv.includes('--slot=pgdeploy_standby') && argv.includes('--wal-method=stream') && argv.includes('--no-password'),
      argv.join(' '),
    );
    const dbname = argv.find((a) => a.startsWith('--dbname='))!;
    assert.match(
      dbname,
      /host='api-db' port=5432 user='pgdeploy_replicator' passfile='[^']+\/tmpfs\/replication\.pgpass' sslmode=verify-full sslrootcert='\/etc\/postgresql\/tls\/ca\.crt'/,
    );
    const env = await fs.readFile(path.join(data, 'env'), 'utf8');
    assert.not.match(env, /^PGPASSWORD=/m, 'no PGPASSWORD from the environment');
    for (const text of [argv.join('\n'), env, r.stdout, r.stderr])
      assert.not.ok(text.includes(REPL_PASSWORD), 'the password in no argv, environment or output');
    const auto = await fs.readFile(path.join(data, 'postgresql.auto.conf'), 'utf8');
    assert.not.match(auto, /synchronous_standby_names/, "the primary's synchronous_standby_names is dropped");
    assert.match(auto, /^work_mem = '8MB'$/m, 'the rest is kept');
    assert.match(auto, /^primary_conninfo = 'host=''api-db'' .*passfile=.*sslmode=verify-full.*application_name=pgdeploy_standby'$/m);
    assert.match(auto, /^primary_slot_name = 'pgdeploy_standby'$/m);
    for (const f of ['standby.signal', 'postgresql.auto.conf', '.']) {
      const st = await fs.stat(path.join(data, f));
      assert.equal([st.uid, st.mode & 0o077], [ctx.postgres!.uid, 0], `${f}: the server's, private`);
    }
    const pass = path.join(vol, 'tmpfs', 'replication.pgpass');
    const st = await fs.stat(pass);
    assert.equal([st.uid, st.mode & 0o777], [ctx.postgres!.uid, 0o600]);
    assert.is(await fs.readFile(pass, 'utf8'), '*:*:*:pgdeploy_replicator:pa\\:ss\\\\word\n', 'escaped as libpq reads it');
    await fs.stat(path.join(vol, 'pgdata.basebackup')).then(
      () => assert.unreachable('no work folder left'),
      () => undefined,
    );
    const calls = (await fs.readFile(path.join(ctx.dir!, 'db-start.calls'), 'utf8')).trim().split('\n');
    assert.equal(calls.slice(-2), ['--install-tls-only', '-c log_statement=ddl'], 'TLS first, then the server as api-db starts it');
  },
);

replicaStart(
  'on a built PGDATA: no base backup, a fresh password file, the server started (a promoted standby stays a primary)',
  async (ctx) => {
    const vol = path.join(ctx.dir!, 'built');
    await fs.mkdir(path.join(vol, 'pgdata'), { recursive: true });
    await fs.writeFile(path.join(vol, 'pgdata', 'PG_VERSION'), '16\n');
    const r = await replicaEntrypoint(ctx, vol);
    assert.is(r.code, 0, r.stderr);
    assert.equal((await fs.readdir(path.join(vol, 'pgdata'))).sort(), ['PG_VERSION'], 'nothing added, no standby.signal');
    assert.is((await fs.stat(path.join(vol, 'tmpfs', 'replication.pgpass'))).mode & 0o777, 0o600);
  },
);

replicaStart('a failed base backup leaves no data directory and says what to do, and starts nothing', async (ctx) => {
  const vol = path.join(ctx.dir!, 'failing');
  await fs.rm(path.join(ctx.dir!, 'db-start.calls'), { force: true });
  const r = await replicaEntrypoint(ctx, vol, { FAIL_BASEBACKUP: '1' });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /db-replica-start: pg_basebackup from api-db failed .*pnpm db:replica/);
  assert.equal((await fs.readdir(vol)).sort(), ['tmpfs'], 'no pgdata, no work folder');
  assert.equal((await fs.readFile(path.join(ctx.dir!, 'db-start.calls'), 'utf8')).trim(), '--install-tls-only', 'no server started');
});

replicaStart('refuses a missing replication secret with one line naming it, and starts nothing', async (ctx) => {
  const secrets = path.join(ctx.dir!, 'no-password');
  await fs.mkdir(secrets, { mode: 0o700 });
  await fs.copyFile(path.join(ctx.secrets!, 'replication_user'), path.join(secrets, 'replication_user'));
  await fs.rm(path.join(ctx.dir!, 'db-start.calls'), { force: true });
  const r = await replicaEntrypoint(ctx, path.join(ctx.dir!, 'nosecret'), { SECRETS_DIR: secrets });
  oneLine(r, /replication_password is missing or empty/, /pnpm db:replica makes it/);
  await fs.stat(path.join(ctx.dir!, 'nosecret', 'pgdata')).then(
    () => assert.unreachable('no data directory'),
    () => undefined,
  );
});

replicaStart.run();

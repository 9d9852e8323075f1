import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadEnv, parseConfig } from '@dbkit/core/config';
import { UserError } from '@dbkit/core/errors';
import { cli, makeProject, removeProject, type Project } from './setup/project.ts';
import { output } from './setup/engine.ts';

const ROOT = '/nonexistent-project';

/** The UserError parseConfig throws for these settings. */
function refusal(env: Record<string, string>): UserError {
  try {
    parseConfig(ROOT, env);
  } catch (e) {
    assert.instance(e, UserError);
    return e as UserError;
  }
  throw new Error(`parseConfig accepted ${JSON.stringify(env)}`);
}

const numbers = suite('whole-number settings');

numbers('ENV_DB_PORT=1e3 and other spellings Number() reads are refused, not taken as a port', () => {
  for (const raw of ['1e3', '0x10', '1_000', ' 80', '5432.0', '+5432', '5432 ']) {
    assert.match(refusal({ ENV_DB_PORT: raw }).message, `ENV_DB_PORT=${raw} is not a whole number from 1 to 65535`, raw);
  }
  assert.match(refusal({ DB_TLS_DAYS: '1e2' }).message, /DB_TLS_DAYS=1e2 is not a whole number/);
});

numbers('digits are read as the number they write', () => {
  assert.is(parseConfig(ROOT, { ENV_DB_PORT: '6543' }).port, 6543);
  assert.is(parseConfig(ROOT, { ENV_DB_PORT: '08080' }).port, 8080);
  assert.is(parseConfig(ROOT, {}).port, 5432);
});

numbers("the migration statements' lock timeout and retries have defaults and are read in seconds and tries", () => {
  const def = parseConfig(ROOT, {});
  assert.equal([def.statementLockTimeoutMs, def.statementLockRetries], [3000, 3]);
  const set = parseConfig(ROOT, { DB_MIGRATE_STATEMENT_LOCK_TIMEOUT: '7', DB_MIGRATE_STATEMENT_LOCK_RETRIES: '0' });
  assert.equal([set.statementLockTimeoutMs, set.statementLockRetries], [7000, 0]);
  assert.match(
    refusal({ DB_MIGRATE_STATEMENT_LOCK_RETRIES: '-1' }).message,
    /DB_MIGRATE_STATEMENT_LOCK_RETRIES=-1 is not a whole number from 0 to 100/,
  );
});

numbers.run();

const beyond = suite('settings beyond one machine (target, replica, WAL archive)');

beyond('defaults: compose, the replica one port above the primary, asynchronous, WAL under the backups', () => {
  const c = parseConfig(ROOT, { ENV_DB_PORT: '6000', DB_BACKUP_DIR: '/srv/backups' });
  assert.equal([c.target, c.replicaPort, c.syncReplica, c.walArchiveDir], ['compose', 6001, false, '/srv/backups/wal']);
  assert.is(parseConfig(ROOT, { ENV_DB_PORT: '65535' }).replicaPort, 65534);
  const set = parseConfig(ROOT, { DB_TARGET: 'swarm', DB_REPLICA_PORT: '7000', DB_SYNC_REPLICA: 'ON', DB_WAL_ARCHIVE_DIR: 'wal' });
  assert.equal([set.target, set.replicaPort, set.syncReplica, set.walArchiveDir], ['swarm', 7000, true, `${ROOT}/wal`]);
});

beyond('a wrong target, a sync flag that is not on/off, or swarm on the native runtime are refused with the fix', () => {
  assert.match(refusal({ DB_TARGET: 'k8s' }).message, /DB_TARGET=k8s is not one of compose, swarm/);
  assert.match(refusal({ DB_SYNC_REPLICA: 'yes' }).message, /DB_SYNC_REPLICA=yes is not on or off/);
  const e = refusal({ DB_TARGET: 'swarm', DB_RUNTIME: 'native' });
  assert.match(e.message, /DB_TARGET=swarm needs the docker runtime/);
  assert.match(String(e.hint), /unset DB_RUNTIME/);
  assert.match(refusal({ DB_REPLICA_PORT: '0' }).message, /DB_REPLICA_PORT=0 is not a whole number from 1 to 65535/);
});

beyond.run();

const user = suite<{ p?: Project }>('DB_NATIVE_USER', {});

user.after(async (ctx) => removeProject(ctx.p));

user('root is refused with the reason, before anything runs', () => {
  const e = refusal({ DB_NATIVE_USER: 'root' });
  assert.match(e.message, /DB_NATIVE_USER=root: PostgreSQL refuses to run as root/);
  assert.match(String(e.hint), /unset DB_NATIVE_USER/);
  assert.match(refusal({ DB_NATIVE_USER: 'a b;rm' }).message, /DB_NATIVE_USER=a b;rm is not a user name/);
  assert.is(parseConfig(ROOT, { DB_NATIVE_USER: 'pgrunner' }).nativeUser, 'pgrunner');
});

user('db:up with DB_NATIVE_USER=root says so in one error and creates no data directory', async (ctx) => {
  ctx.p = await makeProject();
  const r = await cli(['db:up'], { ...ctx.p.env, DB_NATIVE_USER: 'root' });
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /^error: DB_NATIVE_USER=root: PostgreSQL refuses to run as root/m);
  assert.match(r.stderr, /^hint: unset DB_NATIVE_USER/m);
  assert.is(await fs.stat(ctx.p.nativeDir).catch(() => undefined), undefined);
});

user.run();

const env = suite<{ root: string }>('.env files never hold secrets', { root: '' });

env.before.each(async (ctx) => {
  ctx.root = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-config-'));
  await fs.writeFile(path.join(ctx.root, '.env'), 'ENV_DB_PORT=5432\nDB_PASSWORD=\n');
});
env.after.each(async (ctx) => fs.rm(ctx.root, { recursive: true, force: true }));

async function envRefusal(root: string, real: Record<string, string> = {}): Promise<UserError> {
  const e = await loadEnv(root, real).then(
    () => undefined,
    (x) => x,
  );
  assert.instance(e, UserError, 'loadEnv accepted the files');
  return e as UserError;
}

env('a DATABASE_URL with a password is refused, naming the file that holds it, not the others', async ({ root }) => {
  await fs.writeFile(path.join(root, '.env.local'), 'DATABASE_URL=postgres://app:hunter2@db.example.test:5432/app\n');
  const e = await envRefusal(root);
  assert.match(e.message, /^DATABASE_URL holds a password in a \.env file \(\.env\.local\): secrets must not live in \.env files$/);
  assert.match(String(e.hint), /^remove DATABASE_URL from \.env\.local;/);
  assert.not.ok(e.message.includes('hunter2') || String(e.hint).includes('hunter2'));
});

env('so is a libpq keyword string with password=', async ({ root }) => {
  await fs.writeFile(path.join(root, '.env.local'), 'PG_CONN="host=db user=app password=hunter2"\n');
  assert.match((await envRefusal(root)).message, /PG_CONN holds a password in a \.env file \(\.env\.local\)/);
});

env('API_KEY is refused, naming .env.<NODE_ENV> where it is set', async ({ root }) => {
  await fs.writeFile(path.join(root, '.env.production'), 'API_KEY=abc123\nSTRIPE_SECRET_KEY=sk_live_x\n');
  const e = await envRefusal(root, { NODE_ENV: 'production' });
  assert.match(
    e.message,
    /API_KEY is set in a \.env file \(\.env\.production\); STRIPE_SECRET_KEY is set in a \.env file \(\.env\.production\)/,
  );
  assert.match(String(e.hint), /remove API_KEY, STRIPE_SECRET_KEY from \.env\.production;/);
});

env('a URL without a password, an empty password variable and ordinary settings pass', async ({ root }) => {
  await fs.writeFile(
    path.join(root, '.env.local'),
    'DATABASE_URL=postgres://app@localhost:5432/app?sslmode=verify-full\nDB_TLS_DAYS=30\nKEY_FILE_PATH=/etc/x\n',
  );
  const vars = await loadEnv(root, {});
  assert.is(vars.DATABASE_URL, 'postgres://app@localhost:5432/app?sslmode=verify-full');
  assert.is(vars.DB_TLS_DAYS, '30');
});

env.run();

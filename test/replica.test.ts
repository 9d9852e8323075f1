import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { connect, withClient, type Target } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { FENCE_FILE } from '@dbkit/core/replica';
import { nativeReplicaPaths } from '@dbkit/core/runtime/native-replica';
import {
  cli,
  freePort,
  holdPort,
  ok,
  otherFreePort,
  ownerTarget,
  readSecretFile,
  removeProject,
  ROOT,
  run,
  startProject,
  type Project,
} from './setup/project.ts';
import { backupProject, debianBin, superuser, suQuery } from './setup/backup.ts';
import { assertAbsent, failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

// The failover drill on real servers (Debian's binaries, so pg_basebackup has the server's major)
// with real TLS: a standby from db:replica, a write seen on it, the primary killed, db:promote, and
// clients that find the new primary. Every wait below is bounded; none is an assertion on time.

interface Ctx {
  p?: Project;
  replicaPort?: number;
}

/** A project on Debian's binaries with a free port for its standby. */
async function replicaProject(env: Record<string, string> = {}): Promise<{ p: Project; replicaPort: number }> {
  const p = await backupProject();
  const replicaPort = await otherFreePort(p.port);
  Object.assign(p.env, { DB_REPLICA_PORT: String(replicaPort), ...env });
  return { p, replicaPort };
}

/** The superuser on the standby's own socket. */
async function standbySu(p: Project, replicaPort: number, database?: string) {
  return { ...(await superuser(p, database)), host: nativeReplicaPaths(p.nativeDir).run, port: replicaPort };
}

async function standbyQuery(p: Project, replicaPort: number, sql: string): Promise<Record<string, unknown>[]> {
  return withClient(await standbySu(p, replicaPort), async (c) => (await c.query(sql)).rows);
}

/** Polls until `probe` is true; fails the test (not on time, on never) after `ms`. */
async function eventually(what: string, probe: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > end) assert.unreachable(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGKILL to the primary's postmaster: a crash, no shutdown, nothing more sent to the standby. */
async function killPrimary(p: Project): Promise<number> {
  const pid = Number((await fs.readFile(path.join(nativePaths(p.nativeDir).data, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  process.kill(pid, 'SIGKILL');
  await eventually('the killed primary is gone', async () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  });
  return pid;
}

/** libpq's multi-host string: both servers, the standby first, and only a read-write session will do. */
async function multiHostPsql(p: Project, ports: number[], sql: string) {
  const conn = [
    `host=${ports.map(() => 'localhost').join(',')}`,
    `port=${ports.join(',')}`,
    `user=${await readSecretFile(p, 'app_user')}`,
    `dbname=${await readSecretFile(p, 'postgres_db')}`,
    'sslmode=verify-full',
    `sslrootcert=${path.join(p.sslDir, 'ca.crt')}`,
    'target_session_attrs=read-write',
    'connect_timeout=3',
  ].join(' ');
  return run(path.join(debianBin(), 'psql'), ['-X', '-At', '-d', conn, '-c', sql], {
    PGPASSWORD: await readSecretFile(p, 'app_password'),
  });
}

/** The example app (packages/api/server.mjs) with a multi-host DB_HOST/DB_PORT. */
async function startApi(p: Project, ports: number[]): Promise<{ child: ChildProcess; port: number; stop: () => Promise<void> }> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'packages/api/server.mjs')], {
    env: {
      PATH: process.env.PATH,
      SECRETS_DIR: p.secretsDir,
      DB_HOST: ports.map(() => 'localhost').join(','),
      DB_PORT: ports.join(','),
      DB_CA_FILE: path.join(p.sslDir, 'ca.crt'),
      PORT: String(port),
      LISTEN_HOST: '127.0.0.1',
      APP_USER: 'postgres',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  let out = '';
  await new Promise<void>((resolve) => {
    child.stdout!.on('data', (d) => (out += d) && out.includes('listening') && resolve());
    void exited.then(resolve);
  });
  assert.match(out, /listening/, 'the api started');
  return {
    child,
    port,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

const health = async (port: number) => {
  const r = await fetch(`http://127.0.0.1:${port}/health`);
  return { status: r.status, body: (await r.json()) as { status?: string; server?: string; error?: string } };
};

// ---------------------------------------------------------------------------------------------
const drill = suite<Ctx & { api?: Awaited<ReturnType<typeof startApi>> }>('failover drill: db:replica, kill the primary, db:promote');

setUp(drill, async (ctx) => {
  const { p, replicaPort } = await replicaProject();
  ctx.p = p;
  ctx.replicaPort = replicaPort;
  await startProject(p, { migrate: [] });
});

drill.after(async (ctx) => {
  await ctx.api?.stop();
  await removeProject(ctx.p);
});

drill('db:replica builds a standby over verified TLS as a replication role whose password is in no argv, log or output', async (ctx) => {
  const p = ctx.p!;
  const r = await ok(['db:replica'], p.env);
  assert.match(r.stdout, new RegExp(`built a standby on 127\\.0\\.0\\.1:${ctx.replicaPort}`));
  assert.match(r.stdout, /created the secret files replication_user, replication_password/);
  const user = await readSecretFile(p, 'replication_user');
  const password = await readSecretFile(p, 'replication_password');
  for (const f of ['replication_user', 'replication_password'])
    assert.is((await fs.stat(path.join(p.secretsDir, f))).mode & 0o077, 0, `${f} is 0600`);
  const rp = nativeReplicaPaths(p.nativeDir);
  const pass = await fs.stat(rp.passfile);
  assert.is(pass.mode & 0o777, 0o600, 'the passfile is 0600');
  assert.is(pass.uid, Number((await run('id', ['-u', 'postgres'], {})).stdout.trim()), "the passfile is the server user's");
  const auto = await fs.readFile(path.join(rp.data, 'postgresql.auto.conf'), 'utf8');
  assert.match(auto, /primary_conninfo = .*passfile=.*sslmode=''?verify-full/);
  assert.match(auto, /primary_slot_name = 'pgdeploy_standby'/);
  const logs = (await fs.readFile(rp.log, 'utf8')) + (await fs.readFile(nativePaths(p.nativeDir).log, 'utf8'));
  for (const text of [r.stdout, r.stderr, auto, logs]) assert.not.ok(text.includes(password), 'the password appears nowhere');
  const [role] = await suQuery(
    p,
    `SELECT rolreplication, rolsuper, rolcanlogin, pg_has_role(rolname, 'pgdeploy_replication', 'member') AS member,
       rolpassword LIKE 'SCRAM-SHA-256$%' AS scram FROM pg_authid WHERE rolname = '${user}'`,
  );
  assert.equal(role, { rolreplication: true, rolsuper: false, rolcanlogin: true, member: true, scram: true });
  const [stream] = await suQuery(
    p,
    `SELECT r.usename, r.state, s.ssl, (SELECT active FROM pg_replication_slots WHERE slot_name = 'pgdeploy_standby') AS slot
       FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'pgdeploy_standby'`,
  );
  assert.equal(stream, { usename: user, state: 'streaming', ssl: true, slot: true }, 'streaming over TLS through the slot');
  const [rec] = await standbyQuery(p, ctx.replicaPort!, 'SELECT pg_is_in_recovery() AS standby');
  assert.is(rec.standby, true);
});

drill('a second db:replica says the standby runs and changes nothing', async (ctx) => {
  const p = ctx.p!;
  const pidFile = path.join(nativeReplicaPaths(p.nativeDir).data, 'postmaster.pid');
  const before = await fs.readFile(pidFile, 'utf8');
  const [pw] = await suQuery(p, "SELECT rolpassword FROM pg_authid WHERE rolname = 'pgdeploy_replicator'");
  const r = await ok(['db:replica'], p.env);
  assert.match(r.stdout, /runs already/);
  assert.match(r.stdout, /nothing changed/);
  assert.is(await fs.readFile(pidFile, 'utf8'), before, 'the same standby process');
  assert.equal((await suQuery(p, "SELECT rolpassword FROM pg_authid WHERE rolname = 'pgdeploy_replicator'"))[0], pw, 'the same password');
});

drill('a row written on the primary appears on the standby, and the standby refuses writes', async (ctx) => {
  const p = ctx.p!;
  await withClient(await ownerTarget(p), (c) => c.query("INSERT INTO accounts (email) VALUES ('before@example.com')"));
  await eventually('the row on the standby', async () => {
    const rows = await standbyQuery(p, ctx.replicaPort!, "SELECT 1 FROM accounts WHERE email = 'before@example.com'");
    return rows.length === 1;
  });
  const err = await standbyQuery(p, ctx.replicaPort!, "INSERT INTO accounts (email) VALUES ('no@example.com')").catch((e: Error) => e);
  assert.instance(err, Error);
  assert.match((err as Error).message, /read-only transaction/);
});

drill('db:status shows the standby streaming with its lag in bytes and seconds, in text and JSON', async (ctx) => {
  const p = ctx.p!;
  const text = await ok(['db:status'], p.env);
  assert.match(text.stdout, new RegExp(`^replica +127\\.0\\.0\\.1:${ctx.replicaPort} standby, streaming \\(async\\)`, 'm'));
  await eventually('a replay position on the primary', async () => {
    const o = JSON.parse((await ok(['db:status', '--json'], p.env)).stdout).overview.replica;
    assert.is(o.role, 'standby');
    assert.is(o.state, 'streaming');
    assert.is(o.syncState, 'async');
    return typeof o.lagBytes === 'number' && o.lagBytes >= 0 && typeof o.lagSeconds === 'number' && typeof o.replayLsn === 'string';
  });
});

drill('db:promote without a terminal and without --yes refuses and changes nothing', async (ctx) => {
  const p = ctx.p!;
  failsClearly(await cli(['db:promote'], p.env), /db:promote needs confirmation/, { hint: /--yes/ });
  const [rec] = await standbyQuery(p, ctx.replicaPort!, 'SELECT pg_is_in_recovery() AS standby');
  assert.is(rec.standby, true, 'still a standby');
});

drill('the example app with a multi-host string (standby first) reaches the primary', async (ctx) => {
  const p = ctx.p!;
  ctx.api = await startApi(p, [ctx.replicaPort!, p.port]);
  const h = await health(ctx.api.port);
  assert.is(h.status, 200, JSON.stringify(h.body));
  assert.is(h.body.server, `localhost:${p.port}`, 'the standby is skipped: it is read-only');
});

drill('the primary is killed; db:promote --yes makes the standby take writes, and fences the old primary', async (ctx) => {
  const p = ctx.p!;
  await killPrimary(p);
  const st = JSON.parse((await ok(['db:status', '--json'], p.env)).stdout).overview;
  assert.is(st.server.up, false);
  assert.is(st.replica.role, 'standby');
  const r = await ok(['db:promote', '--yes'], p.env);
  assert.match(r.stdout, new RegExp(`promoted the standby on 127\\.0\\.0\\.1:${ctx.replicaPort} in \\d+ ms`));
  assert.match(r.stdout, /fenced the old primary/);
  assert.match(r.stdout, /next: /);
  const promoted = { ...(await ownerTarget(p)), port: ctx.replicaPort! } satisfies Target;
  await withClient(promoted, (c) => c.query("INSERT INTO accounts (email) VALUES ('after@example.com')"));
  const rows = await withClient(promoted, async (c) => (await c.query('SELECT email FROM accounts ORDER BY id')).rows.map((x) => x.email));
  assert.equal(rows, ['before@example.com', 'after@example.com']);
  await fs.stat(path.join(nativePaths(p.nativeDir).data, FENCE_FILE));
  const status = await ok(['db:status'], p.env);
  assert.match(status.stdout, /^replica +.* PROMOTED/m);
});

drill('after the failover a libpq multi-host string and the example app reach the new primary', async (ctx) => {
  const p = ctx.p!;
  const psql = await multiHostPsql(p, [p.port, ctx.replicaPort!], 'SELECT inet_server_port(), pg_is_in_recovery()');
  assert.is(psql.code, 0, psql.stderr);
  assert.is(psql.stdout.trim(), `${ctx.replicaPort}|f`);
  const h = await health(ctx.api!.port);
  assert.is(h.status, 200, JSON.stringify(h.body));
  assert.is(h.body.server, `localhost:${ctx.replicaPort}`);
});

drill('the fenced old primary does not come back: db:up and db:promote say why', async (ctx) => {
  const p = ctx.p!;
  failsClearly(await cli(['db:up'], p.env), /is fenced: the standby on .* was promoted/, { hint: /Failover/ });
  failsClearly(await cli(['db:promote', '--yes'], p.env), /was promoted already/);
  const r = await ok(['db:down'], p.env);
  assert.match(r.stdout, /the standby too/);
});

drill('db:delete removes the standby with the rest', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:delete', '--yes', '--no-backup', '--force-production'], p.env);
  await fs.stat(nativeReplicaPaths(p.nativeDir).dir).then(
    () => assert.unreachable('the standby folder is gone'),
    () => undefined,
  );
  const left = await run('pgrep', ['-f', `postgres -D ${nativeReplicaPaths(p.nativeDir).data}`], {});
  assert.is(left.stdout.trim(), '', 'no standby process left');
});

drill.run();

// ---------------------------------------------------------------------------------------------
const sync = suite<Ctx>('DB_SYNC_REPLICA=on: every commit acknowledged before the primary died is on the promoted standby');

setUp(sync, async (ctx) => {
  const { p, replicaPort } = await replicaProject({ DB_SYNC_REPLICA: 'on' });
  ctx.p = p;
  ctx.replicaPort = replicaPort;
  await startProject(p, { migrate: [] });
  await ok(['db:replica'], p.env);
});

sync.after(async (ctx) => {
  await removeProject(ctx.p);
});

sync('the primary waits for the standby: synchronous_standby_names names it, pg_stat_replication says sync', async (ctx) => {
  const [r] = await suQuery(
    ctx.p!,
    "SELECT current_setting('synchronous_standby_names') AS names, (SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgdeploy_standby') AS state",
  );
  assert.equal(r, { names: 'pgdeploy_standby', state: 'sync' });
});

sync('rows committed right up to a SIGKILL of the primary are all there after db:promote, which takes writes', async (ctx) => {
  const p = ctx.p!;
  const acked: number[] = [];
  const writer = (async () => {
    const c = await connect(await ownerTarget(p));
    try {
      for (let i = 1; ; i++) {
        await c.query('INSERT INTO accounts (email) VALUES ($1)', [`row${i}@example.com`]);
        acked.push(i); // the commit returned: the application was told it is durable
      }
    } catch {
      // the primary died mid-insert: this one was never acknowledged
    } finally {
      await c.end().catch(() => {});
    }
  })();
  await eventually('a few hundred commits', async () => acked.length >= 200);
  await killPrimary(p);
  await writer;
  await ok(['db:promote', '--yes'], p.env);
  const promoted = { ...(await ownerTarget(p)), port: ctx.replicaPort! };
  const have = await withClient(promoted, async (c) => {
    // It waits for no standby of its own now: a write returns (bounded, so a hang fails instead).
    await c.query("SET statement_timeout = '10s'");
    await c.query("INSERT INTO accounts (email) VALUES ('after@example.com')");
    return new Set((await c.query("SELECT email FROM accounts WHERE email LIKE 'row%'")).rows.map((x) => x.email as string));
  });
  const lost = acked.filter((i) => !have.has(`row${i}@example.com`));
  assert.equal(lost, [], `${lost.length} of ${acked.length} acknowledged commits lost`);
});

sync.run();

// ---------------------------------------------------------------------------------------------
const bad = suite<Ctx & { blocker?: { release(): Promise<void> } }>('bad input: one clear error, nothing half-made');

setUp(bad, async (ctx) => {
  const { p, replicaPort } = await replicaProject();
  ctx.p = p;
  ctx.replicaPort = replicaPort;
  await startProject(p);
});

bad.after(async (ctx) => {
  await ctx.blocker?.release();
  await removeProject(ctx.p);
});

bad('db:promote with no standby says so', async (ctx) => {
  failsClearly(await cli(['db:promote', '--yes'], ctx.p!.env), /^error: there is no standby to promote$/, { hint: /pnpm db:replica/ });
});

bad('db:replica on a taken port names DB_REPLICA_PORT and leaves no secret, role, slot or data directory', async (ctx) => {
  const p = ctx.p!;
  ctx.blocker = await holdPort(ctx.replicaPort!);
  failsClearly(await cli(['db:replica'], p.env), new RegExp(`port ${ctx.replicaPort} .*DB_REPLICA_PORT.* is taken`), {
    hint: /DB_REPLICA_PORT/,
  });
  await assertAbsent(path.join(p.secretsDir, 'replication_user'), 'no replication_user');
  await assertAbsent(nativeReplicaPaths(p.nativeDir).data, 'no standby data directory');
  const [r] = await suQuery(
    p,
    "SELECT (SELECT count(*) FROM pg_replication_slots)::int AS slots, (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgdeploy_replic%')::int AS roles",
  );
  assert.equal(r, { slots: 0, roles: 0 });
});

bad('db:replica with the primary stopped says to start it first', async (ctx) => {
  await ok(['db:down'], ctx.p!.env);
  failsClearly(await cli(['db:replica'], ctx.p!.env), /the primary is not running/, { hint: /pnpm db:up/ });
});

bad.run();

import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { holdPort, otherFreePort, readSecretFile, type CliResult } from './setup/project.ts';
import {
  cli,
  compose,
  containerId,
  docker,
  engineSuite,
  inspectContainer,
  makeDockerProject,
  ok,
  removeDockerProject,
  run,
  startDockerProject,
  until,
  type DockerProject,
} from './setup/docker.ts';
import { assertAbsent, failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

// The failover drill on the docker runtime against a real engine: db:replica starts api-db-replica
// (a base backup over verified TLS as the replication role), a row written on the primary appears
// on the standby, the primary's postmaster is killed from the host (a crash: `docker kill` would be
// a deliberate stop), db:promote --yes, a write on the promoted server, and a libpq multi-host string
// that finds it. Every wait is bounded; none is an assertion on time. The Compose project (both
// profiles' containers, network, both volumes) is removed in `after`, even on failure.

interface Ctx {
  p?: DockerProject;
  replicaPort?: number;
  blocker?: { release(): Promise<void> };
}

const REPLICA = 'api-db-replica';

/** Compose with the standby's profile (its port is in p.env), as the tasks run it. */
const replicaCompose = (p: DockerProject, args: string[], opts: { input?: string } = {}) =>
  compose(p, ['--profile', 'replica', ...args], opts);

/** SQL as the superuser on a service's own socket (db-admin-sql), rows as lines of 0x1f-separated fields. */
async function suSql(p: DockerProject, service: string, sql: string): Promise<string[][]> {
  const r = await replicaCompose(p, ['exec', '--no-TTY', service, '/usr/local/bin/db-admin-sql', 'postgres'], { input: sql });
  if (r.code !== 0) throw new Error(`db-admin-sql in ${service} exited ${r.code}: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\x1f'));
}

/** libpq's psql on PATH over verify-full TLS as the application role; the password in its environment, never in argv. */
async function appPsql(p: DockerProject, conn: string[], sql: string): Promise<CliResult> {
  return run('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', conn.join(' '), '-c', sql], {
    PGUSER: await readSecretFile(p, 'app_user'),
    PGPASSWORD: await readSecretFile(p, 'app_password'),
    PGDATABASE: await readSecretFile(p, 'postgres_db'),
    PGSSLMODE: 'verify-full',
    PGSSLROOTCERT: path.join(p.sslDir, 'ca.crt'),
    PGCONNECT_TIMEOUT: '5',
  });
}

/** One server on 127.0.0.1 (the certificate names it), as the application role. */
async function appQuery(p: DockerProject, port: number, sql: string): Promise<string> {
  const r = await appPsql(p, ['host=127.0.0.1', `port=${port}`], sql);
  if (r.code !== 0) throw new Error(`psql on port ${port} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

// ---------------------------------------------------------------------------------------------
const drill = engineSuite<Ctx>('docker failover drill: db:replica, kill the primary, db:promote');

if (drill) {
  setUp(drill, async (ctx) => {
    ctx.p = await makeDockerProject();
    ctx.replicaPort = await otherFreePort(ctx.p.port);
    ctx.p.env.DB_REPLICA_PORT = String(ctx.replicaPort);
    await startDockerProject(ctx.p, { migrate: true });
  });

  drill.after(async (ctx) => {
    await ctx.blocker?.release();
    await removeDockerProject(ctx.p, ['replica']);
  });

  drill('db:promote with no standby says so, and changes nothing', async (ctx) => {
    failsClearly(await cli(['db:promote', '--yes'], ctx.p!.env), /^error: there is no standby to promote$/, { hint: /pnpm db:replica/ });
    assert.ok((await inspectContainer(await containerId(ctx.p!, 'api-db'))).status === 'running', 'api-db still runs');
  });

  drill('db:replica on a taken port names DB_REPLICA_PORT and makes no secret, role, slot or standby', async (ctx) => {
    const p = ctx.p!;
    ctx.blocker = await holdPort(ctx.replicaPort!);
    failsClearly(await cli(['db:replica'], p.env), new RegExp(`port ${ctx.replicaPort} .*DB_REPLICA_PORT.* is taken`), {
      hint: /DB_REPLICA_PORT/,
    });
    await ctx.blocker.release();
    ctx.blocker = undefined;
    await assertAbsent(path.join(p.secretsDir, 'replication_password'), 'no replication_password');
    const [[slots, roles]] = await suSql(
      p,
      'api-db',
      "SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgdeploy_replic%')",
    );
    assert.equal([slots, roles], ['0', '0']);
    assert.is((await replicaCompose(p, ['ps', '--all', '--quiet', REPLICA])).stdout.trim(), '', 'no standby container');
  });

  drill('db:replica builds a standby over verified TLS whose password is in no argv, output, log or docker inspect', async (ctx) => {
    const p = ctx.p!;
    const r = await ok(['db:replica'], p.env);
    assert.match(r.stdout, new RegExp(`built a standby on 127\\.0\\.0\\.1:${ctx.replicaPort}`));
    assert.match(r.stdout, /created the secret files replication_user, replication_password/);
    assert.match(r.stdout, new RegExp(`127\\.0\\.0\\.1:${ctx.replicaPort} standby, streaming \\(async\\)`));
    const user = await readSecretFile(p, 'replication_user');
    const password = await readSecretFile(p, 'replication_password');
    for (const f of ['replication_user', 'replication_password'])
      assert.is((await fs.stat(path.join(p.secretsDir, f))).mode & 0o077, 0, `${f} is 0600`);

    const [stream] = await suSql(
      p,
      'api-db',
      `SELECT r.usename, r.state, s.ssl, (SELECT active FROM pg_replication_slots WHERE slot_name = 'pgdeploy_standby'),
         (SELECT rolreplication AND NOT rolsuper FROM pg_roles WHERE rolname = r.usename),
         pg_has_role(r.usename, 'pgdeploy_replication', 'member')
       FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'pgdeploy_standby'`,
    );
    assert.equal(stream, [user, 'streaming', 't', 't', 't', 't'], 'streaming over TLS through the slot, as a replication-only member');
    assert.equal(await suSql(p, REPLICA, 'SELECT pg_is_in_recovery()'), [['t']]);

    // The password file: on the tmpfs, 0600, the server user's; primary_conninfo names it and holds no password.
    const inside = await replicaCompose(p, [
      'exec',
      '--no-TTY',
      REPLICA,
      'sh',
      '-c',
      'stat -c "%a %U" /run/pgdeploy/replication.pgpass; cat "$PGDATA/postgresql.auto.conf"; grep -c " /run/pgdeploy " /proc/mounts',
    ]);
    assert.is(inside.code, 0, inside.stderr);
    const [mode, ...auto] = inside.stdout.trim().split('\n');
    assert.is(mode, '600 postgres');
    assert.match(
      auto.join('\n'),
      /^primary_conninfo = '.*passfile=''\/run\/pgdeploy\/replication\.pgpass''.*sslmode=verify-full.*application_name=pgdeploy_standby'$/m,
    );
    assert.match(auto.join('\n'), /^primary_slot_name = 'pgdeploy_standby'$/m);
    assert.is(auto.pop(), '1', '/run/pgdeploy is a mount (the tmpfs)');

    const id = (await replicaCompose(p, ['ps', '--quiet', REPLICA])).stdout.trim();
    const inspected = (await docker(['inspect', id])).stdout;
    const logs = (await replicaCompose(p, ['logs', '--no-log-prefix', 'api-db', REPLICA])).stdout;
    assert.match(logs, /started streaming WAL from primary/, 'the logs were read');
    for (const [what, text] of [
      ['db:replica output', r.stdout + r.stderr],
      ['docker inspect', inspected],
      ['the logs', logs],
      ['postgresql.auto.conf', auto.join('\n')],
    ])
      assert.not.ok(text.includes(password), `the password is not in ${what}`);
  });

  drill('a second db:replica says the standby runs and changes nothing', async (ctx) => {
    const p = ctx.p!;
    const id = (await replicaCompose(p, ['ps', '--quiet', REPLICA])).stdout.trim();
    const before = await inspectContainer(id);
    const r = await ok(['db:replica'], p.env);
    assert.match(r.stdout, /runs already/);
    assert.match(r.stdout, /nothing changed/);
    assert.is((await inspectContainer(id)).startedAt, before.startedAt, 'the same standby, not restarted');
  });

  drill(
    "a row written on the primary appears on the standby's published port (verify-full, as the app), which refuses writes",
    async (ctx) => {
      const p = ctx.p!;
      await appQuery(p, p.port, "INSERT INTO accounts (email) VALUES ('before@example.com')");
      await until(
        'the row on the standby',
        30_000,
        async () => (await appQuery(p, ctx.replicaPort!, "SELECT count(*) FROM accounts WHERE email = 'before@example.com'")) === '1',
      );
      const w = await appPsql(p, ['host=127.0.0.1', `port=${ctx.replicaPort}`], "INSERT INTO accounts (email) VALUES ('no@example.com')");
      assert.is.not(w.code, 0);
      assert.match(w.stderr, /read-only transaction/);
    },
  );

  drill('db:status shows the standby streaming, in text and JSON', async (ctx) => {
    const p = ctx.p!;
    const text = await ok(['db:status'], p.env);
    assert.match(text.stdout, new RegExp(`^replica +127\\.0\\.0\\.1:${ctx.replicaPort} standby, streaming \\(async\\)`, 'm'));
    const o = JSON.parse((await ok(['db:status', '--json'], p.env)).stdout).overview.replica;
    assert.equal([o.running, o.role, o.state, o.syncState], [true, 'standby', 'streaming', 'async']);
    assert.is(typeof o.lagBytes, 'number');
  });

  drill(
    'DB_SYNC_REPLICA=on makes the running standby the synchronous one by the time db:replica returns; off makes it async again',
    async (ctx) => {
      const p = ctx.p!;
      const syncOf = async () =>
        (await suSql(p, 'api-db', "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgdeploy_standby'"))[0]?.[0];
      const on = await ok(['db:replica'], { ...p.env, DB_SYNC_REPLICA: 'on' });
      assert.match(on.stdout, /DB_SYNC_REPLICA=on: commits on the primary now wait/);
      assert.is(await syncOf(), 'sync', 'pg_stat_replication says sync as soon as db:replica returned');
      const off = await ok(['db:replica'], p.env);
      assert.match(off.stdout, /DB_SYNC_REPLICA=off: commits no longer wait/);
      await until('the standby is async again', 30_000, async () => (await syncOf()) === 'async');
    },
  );

  drill('db:promote without --yes and without a terminal refuses and changes nothing', async (ctx) => {
    failsClearly(await cli(['db:promote'], ctx.p!.env), /db:promote needs confirmation/, { hint: /--yes/ });
    assert.equal(await suSql(ctx.p!, REPLICA, 'SELECT pg_is_in_recovery()'), [['t']], 'still a standby');
    assert.is((await inspectContainer(await containerId(ctx.p!, 'api-db'))).status, 'running', 'the primary still runs');
  });

  drill('the primary is killed from the host; db:promote --yes stops and fences it, and the standby takes writes', async (ctx) => {
    const p = ctx.p!;
    const primaryId = await containerId(p, 'api-db');
    const { pid } = await inspectContainer(primaryId);
    assert.ok(pid > 0, 'the primary has a host PID');
    process.kill(pid, 'SIGKILL');
    await until('the killed postmaster is gone', 30_000, async () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    const r = await ok(['db:promote', '--yes'], p.env);
    assert.match(r.stdout, new RegExp(`promoted the standby on 127\\.0\\.0\\.1:${ctx.replicaPort} in \\d+ ms`));
    assert.match(r.stdout, /fenced the old primary/);
    process.stderr.write(`docker promote: ${/in (\d+) ms/.exec(r.stdout)![1]} ms\n`);
    // Whether the restart policy had brought it back or not, it is down now and stays down.
    assert.is.not((await inspectContainer(primaryId)).status, 'running', 'the old primary is stopped');
    await appQuery(p, ctx.replicaPort!, "INSERT INTO accounts (email) VALUES ('after@example.com')");
    assert.is(
      await appQuery(p, ctx.replicaPort!, "SELECT string_agg(email, ',' ORDER BY id) FROM accounts"),
      'before@example.com,after@example.com',
    );
    assert.match((await ok(['db:status'], p.env)).stdout, /^replica +.* PROMOTED/m);
  });

  drill('the promoted standby runs the shared archive_command: a finished segment is archived, none fails', async (ctx) => {
    const p = ctx.p!;
    await suSql(p, 'api-db-replica', 'SELECT pg_switch_wal()');
    let seen: string[] = [];
    // The archiver takes the finished segment within moments; failures would count up meanwhile.
    await until('the archiver has handled the switched segment', 30_000, async () => {
      [seen] = await suSql(p, 'api-db-replica', "SELECT archived_count, failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver");
      return Number(seen[0]) > 0 || Number(seen[1]) > 0;
    });
    assert.equal(seen.slice(1), ['0', ''], `the promoted standby's archive_command failed: ${seen.join(', ')}`);
  });

  drill('a libpq multi-host string with target_session_attrs=read-write reaches the promoted server', async (ctx) => {
    const p = ctx.p!;
    const conn = [
      'host=127.0.0.1,127.0.0.1',
      `port=${p.port},${ctx.replicaPort}`,
      'target_session_attrs=read-write',
      'sslmode=verify-full',
    ];
    const r = await appPsql(p, conn, 'SELECT inet_server_port(), pg_is_in_recovery()');
    assert.is(r.code, 0, r.stderr);
    // Inside the container the server listens on 5432; that it is not in recovery names the promoted one.
    assert.is(r.stdout.trim(), '5432|f');
    const w = await appPsql(p, conn, "INSERT INTO accounts (email) VALUES ('multi@example.com') RETURNING 1");
    assert.is(w.code, 0, w.stderr);
  });

  drill('the fenced old primary does not come back: db:up says why and leaves it stopped; db:promote says it is done', async (ctx) => {
    const p = ctx.p!;
    failsClearly(await cli(['db:up'], p.env), /api-db: .* is fenced: the standby on .* was promoted/, { hint: /Failover/ });
    assert.is.not((await inspectContainer(await containerId(p, 'api-db'))).status, 'running');
    failsClearly(await cli(['db:promote', '--yes'], p.env), /was promoted already/);
  });

  drill('db:down stops the standby too; db:delete removes both volumes', async (ctx) => {
    const p = ctx.p!;
    assert.match((await ok(['db:down'], p.env)).stdout, /the standby too/);
    assert.is((await replicaCompose(p, ['ps', '--quiet'])).stdout.trim(), '', 'nothing runs');
    await ok(['db:delete', '--yes', '--no-backup', '--force-production'], p.env);
    const vols = await docker(['volume', 'ls', '--quiet', '--filter', `label=com.docker.compose.project=${p.name}`]);
    assert.is(vols.stdout.trim(), '', 'no volume left');
  });

  drill.run();
}

import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { docker, engineSuite, IMAGES_ENV, makeDockerProject, cli, ok, until, type DockerProject } from './setup/docker.ts';
import { freePort, readSecretFile, run } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';
import { failsClearly } from './setup/assert.ts';
import { leaveSwarm, serviceVersions, stackInspect, startSwarm, swarmState, taskContainer } from './setup/swarm.ts';

// DB_TARGET=swarm on a single-node swarm this file starts (docker swarm init on loopback) and leaves
// (docker swarm leave --force) even on failure. An engine already in a swarm fails the suite: it is
// never touched. The stack has its own name, volume and free ports.

const ARCHIVE = '/var/lib/postgresql/archive';
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Ctx {
  p?: DockerProject;
  started?: boolean;
  apiPort?: number;
}

const s = engineSuite<Ctx>('DB_TARGET=swarm: the stack on a single-node swarm');
if (s) {
  setUp(s, async (ctx) => {
    if ((await swarmState()) !== 'inactive')
      throw new Error('this Docker engine is already in a swarm; the Swarm tests never touch one they did not start');
    ctx.apiPort = await freePort();
    ctx.p = await makeDockerProject();
    ctx.p.env = {
      ...ctx.p.env,
      DB_TARGET: 'swarm',
      ENV_API_PORT: String(ctx.apiPort),
      ENV_API_REPLICAS: '1',
      DB_REPLICA_PORT: String(await freePort()),
      DB_UP_TIMEOUT: '90',
    };
    await ok(['db:secrets'], ctx.p.env);
    await ok(['db:secure'], ctx.p.env);
  });
  s.after(async (ctx) => {
    if (ctx.started) await leaveSwarm();
    if (ctx.p) {
      // Once the tasks' containers are gone (leaving the swarm removes them a moment later).
      for (const volume of ['pg_data', 'pg_wal_archive', 'pg_replica_data']
        .map((v) => `${ctx.p!.name}_${v}`)
        .concat(`x${ctx.p.name}_pg_data`))
        await until(`removing ${volume}`, 60_000, async () => {
          await docker(['volume', 'rm', '--force', volume], { nothrow: true });
          return !(await docker(['volume', 'ls', '--quiet', '--filter', `name=^${volume}$`])).stdout.trim();
        }).catch(() => undefined);
      const images = (await docker(['image', 'ls', '--quiet', '--filter', `reference=${ctx.p.name}-api`], { nothrow: true })).stdout;
      for (const id of new Set(images.split('\n').filter(Boolean))) await docker(['image', 'rm', '--force', id], { nothrow: true });
      await fs.rm(ctx.p.dir, { recursive: true, force: true });
    }
  });

  const health = async (port: number) => (await get(port)).ok;

  s('without a swarm, db:up is one error line with the hint docker swarm init, and nothing is deployed', async ({ p }) => {
    const r = await cli(['db:up'], p!.env);
    assert.is(r.code, 1, r.stderr);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
    assert.is(errors.length, 1, r.stderr);
    assert.match(errors[0], /not in a swarm/);
    assert.match(r.stderr, /hint: .*docker swarm init/);
    assert.is(await swarmState(), 'inactive');
  });

  s('on a swarm, db:up deploys the stack and db:migrate runs the migration job to completion', async (ctx) => {
    await startSwarm();
    ctx.started = true;
    const p = ctx.p!;
    await ok(['db:up'], p.env);
    const m = await ok(['db:migrate'], p.env);
    assert.match(m.stderr, /db-migrate \| 1\/u create_accounts/);
    const st = await ok(['db:status', '--json'], p.env);
    assert.is(JSON.parse(st.stdout).pending?.length ?? 0, 0, st.stdout);
    // The one-shot job is gone; the stack's three services stay.
    assert.equal(Object.keys(await serviceVersions(p.name)).sort(), [
      `${p.name}_api`,
      `${p.name}_api-db`,
      `${p.name}_api-publish`,
      `${p.name}_db-migrate`,
    ]);
    // The api runs the image built from packages/api, tagged and labelled with the hash of its inputs.
    const image = JSON.parse((await docker(['service', 'inspect', `${p.name}_api`])).stdout)[0].Spec.TaskTemplate.ContainerSpec.Image;
    const [, tag] = /^[^:]+:([0-9a-f]{12})$/.exec(image) ?? [];
    assert.ok(tag, image);
    const label = (await docker(['image', 'inspect', '--format', '{{index .Config.Labels "org.pg-deploy.inputs"}}', image])).stdout.trim();
    assert.is(label.slice(0, 12), tag);
  });

  s('the secrets are tmpfs in the task, and no password is in docker service inspect or docker inspect', async ({ p }) => {
    const id = await taskContainer(p!.name, 'api-db');
    assert.ok(id, 'api-db runs');
    const mounts = (await docker(['exec', id, 'cat', '/proc/mounts'])).stdout;
    for (const name of ['postgres_password', 'server_key'])
      assert.match(mounts, new RegExp(`^tmpfs /run/secrets/${name} tmpfs ro`, 'm'), mounts);
    // Not the app's password: db:psql hands it over per call (a new version would restart the database).
    assert.not.match(mounts, /app_password/);
    // In-memory too in the api's task.
    const api = await until('the api task', 60_000, () => taskContainer(p!.name, 'api'));
    assert.match((await docker(['exec', api, 'cat', '/proc/mounts'])).stdout, /^tmpfs \/run\/secrets\/app_password tmpfs/m);
    const secrets = (await docker(['secret', 'ls', '--quiet'])).stdout.split('\n').filter(Boolean);
    const seen = [await stackInspect(p!.name), (await docker(['secret', 'inspect', ...secrets])).stdout].join('\n');
    for (const f of ['postgres_password', 'app_password', 'migrate_password']) {
      const pw = await readSecretFile(p!, f);
      assert.ok(pw.length >= 16);
      assert.not.ok(seen.includes(pw), `${f} appears in docker inspect output`);
    }
    assert.not.ok(seen.includes((await fs.readFile(path.join(p!.sslDir, 'server.key'), 'utf8')).split('\n')[1]), 'the TLS key appears');
  });

  s('a second deploy changes nothing: every service keeps its version', async ({ p }) => {
    const before = await serviceVersions(p!.name);
    await ok(['db:up'], p!.env);
    await ok(['db:migrate'], p!.env);
    assert.equal(await serviceVersions(p!.name), before);
  });

  s(
    'rotating the app password updates only the api, start-first: not one request fails, and the old secret is removed',
    async ({ p, apiPort }) => {
      await until('the api healthy', 90_000, () => health(apiPort!));
      const secretNames = async () =>
        (await docker(['secret', 'ls', '--format', '{{.Name}}'])).stdout.split('\n').filter((n) => n.includes('_app_password_'));
      const [old] = await secretNames();
      const dbBefore = await taskContainer(p!.name, 'api-db');
      const publishBefore = await taskContainer(p!.name, 'api-publish');
      const apiBefore = await taskContainer(p!.name, 'api');
      assert.ok(dbBefore && publishBefore && apiBefore);
      // /health, one request after the other on a new connection each, from before the rotation until
      // the api runs on the new secret: every answer is counted.
      const served = { ok: 0, failed: [] as string[] };
      let polling = true;
      const poller = (async () => {
        while (polling) {
          const r = await get(apiPort!);
          if (r.ok) served.ok++;
          else served.failed.push(r.why);
        }
      })();
      try {
        const r = await ok(['db:secrets:rotate', 'app'], p!.env);
        const password = await readSecretFile(p!, 'app_password');
        assert.not.ok(r.stdout.includes(password) || r.stderr.includes(password));
        assert.match(r.stdout, /recreated the api service/);
        const now = await secretNames();
        assert.is(now.length, 1, now.join(' '));
        assert.is.not(now[0], old);
        // The tool returned once the api's update finished: its one running task holds the new secret.
        const apiAfter = await taskContainer(p!.name, 'api');
        assert.is.not(apiAfter, apiBefore);
        const mounted = JSON.parse((await docker(['inspect', apiAfter])).stdout)[0].Config.Labels['com.docker.swarm.task.id'];
        const task = JSON.parse((await docker(['inspect', mounted])).stdout)[0];
        assert.ok(task.Spec.ContainerSpec.Secrets.some((x: { SecretName: string }) => x.SecretName === now[0]));
        // A few more answers from the new task alone.
        const more = served.ok + 20;
        await until('20 more answers', 60_000, async () => served.ok >= more || served.failed.length > 0);
      } finally {
        polling = false;
        await poller;
      }
      process.stderr.write(`rotation of app: ${served.ok} /health requests served, ${served.failed.length} failed\n`);
      assert.equal(served.failed, [], `failed requests during the rotation: ${served.failed.slice(0, 5).join('; ')}`);
      assert.ok(served.ok > 20, String(served.ok));
      // Only the api was updated: the database and the publisher run the same containers.
      assert.is(await taskContainer(p!.name, 'api-db'), dbBefore);
      assert.is(await taskContainer(p!.name, 'api-publish'), publishBefore);
      // db:psql logs in with the new password, handed to docker exec in the environment: in no inspect output.
      const q = await ok(['db:psql', '-At', '-c', 'SELECT current_user'], p!.env);
      assert.is(q.stdout.trim(), (await readSecretFile(p!, 'app_user')).trim());
      const password = await readSecretFile(p!, 'app_password');
      const execs: string[] = JSON.parse((await docker(['inspect', dbBefore])).stdout)[0].ExecIDs ?? [];
      const seen = [
        await stackInspect(p!.name),
        // The exec instances of db:psql too (the engine's API: the CLI has no command for them).
        ...(await Promise.all(
          execs.map(
            async (e) => (await run('curl', ['-sS', '--unix-socket', '/var/run/docker.sock', `http://docker/exec/${e}/json`], {})).stdout,
          ),
        )),
      ].join('\n');
      assert.not.ok(seen.includes(password), 'the app password appears in docker inspect output');
      // The database holds no app_password any more.
      assert.not.match((await docker(['exec', dbBefore, 'ls', '/run/secrets'])).stdout, /app_password/);
      const doctor = await cli(['db:doctor', '--json'], p!.env);
      assert.is(doctor.code, 0, doctor.stdout + doctor.stderr);
      const report = JSON.parse(doctor.stdout) as { ok: boolean; checks: { name: string; status: string }[] };
      assert.ok(report.ok);
      assert.equal(
        report.checks.filter((c) => c.status !== 'ok').map((c) => `${c.name}: ${c.status}`),
        [],
        doctor.stdout,
      );
    },
  );

  s('db:backup takes a logical backup of the stack, verified by a restore, and it is listed in the backup folder', async ({ p }) => {
    await ok(['db:psql', '-c', "INSERT INTO accounts (email) VALUES ('kept@example.com')"], p!.env);
    const r = JSON.parse((await ok(['db:backup', '--verify', '--json'], p!.env)).stdout);
    assert.ok(r.verified, JSON.stringify(r));
    const listed = await fs.readdir(p!.env.DB_BACKUP_DIR!);
    assert.ok(listed.includes(r.name), listed.join(' '));
    const manifest = JSON.parse(await fs.readFile(path.join(r.backup, 'manifest.json'), 'utf8'));
    assert.is(manifest.data['table public.accounts'], '1', JSON.stringify(manifest.data));
  });

  s(
    'db:backup --physical, then db:restore --to-time: rows inserted at t1 and deleted at t2 are back, api-db running again',
    async ({ p }) => {
      const env = p!.env;
      const sql = async (q: string) => (await ok(['db:psql', '-At', '-c', q], env)).stdout.trim();
      const inDb = async (script: string) =>
        (await docker(['exec', await taskContainer(p!.name, 'api-db'), 'sh', '-c', script])).stdout.trim();
      const base = JSON.parse((await ok(['db:backup', '--physical', '--json'], env)).stdout);
      assert.match(base.name, /-physical$/);
      // The archive volume of the stack is armed: the server's, private.
      assert.is(await inDb(`stat -c '%U %a' ${ARCHIVE}/wal`), 'postgres 700');
      await pause(1100);
      await sql(`INSERT INTO accounts (email) SELECT 't1-' || i || '@example.com' FROM generate_series(1, 5) i`); // t1
      await pause(1100);
      const target = await sql(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')`);
      await pause(1100);
      await sql(`DELETE FROM accounts WHERE email LIKE 't1-%'`); // t2
      assert.is(await sql(`SELECT count(*) FROM accounts WHERE email LIKE 't1-%'`), '0');
      const dbBefore = await taskContainer(p!.name, 'api-db');
      const beside = await inDb('ls -A /var/lib/postgresql/data');

      // A segment missing from the middle of the archive volume: refused, with nothing touched.
      const segments = await until('a segment archived', 30_000, async () => {
        const names = (await inDb(`ls -A ${ARCHIVE}/wal`)).split('\n').filter((n) => /^[0-9A-F]{24}$/.test(n));
        return names.length > 0 && names;
      });
      const gone = segments.sort()[Math.floor(segments.length / 2)];
      await inDb(`mv ${ARCHIVE}/wal/${gone} ${ARCHIVE}/held-${gone}`);
      failsClearly(await cli(['db:restore', '--to-time', target, '--yes'], env), new RegExp(`missing segment ${gone}`), {
        hint: /db:backup --physical/,
      });
      assert.is(await taskContainer(p!.name, 'api-db'), dbBefore, 'api-db was not stopped');
      assert.is(await inDb('ls -A /var/lib/postgresql/data'), beside, 'nothing was set aside');
      await inDb(`mv ${ARCHIVE}/held-${gone} ${ARCHIVE}/wal/${gone}`);

      const r = await ok(['db:restore', '--to-time', target, '--yes', '--json'], env);
      const out = JSON.parse(r.stdout);
      process.stderr.write(`swarm point-in-time recovery: ${out.segments} segment(s), ${out.ms} ms (db:restore's own figure)\n`);
      assert.is(out.base, base.name);
      assert.match(out.stopped, /recovery stopping before commit/);
      assert.is(out.timeline, 2);
      assert.is(await sql(`SELECT count(*) FROM accounts WHERE email LIKE 't1-%'`), '5', 'the rows of t1 are back');
      assert.is(await sql(`SELECT count(*) FROM accounts WHERE email = 'kept@example.com'`), '1', 'and what was before');
      // api-db was scaled to 0 and back to 1: a new task, on the recovered data, with nothing left aside.
      assert.is.not(await taskContainer(p!.name, 'api-db'), dbBefore);
      const spec = JSON.parse((await docker(['service', 'inspect', `${p!.name}_api-db`])).stdout)[0].Spec;
      assert.is(spec.Mode.Replicated.Replicas, 1);
      assert.is(await inDb('ls -A /var/lib/postgresql/data'), beside, 'the set-aside data is gone');
      assert.is(await inDb('test -e "$PGDATA/recovery.signal" && echo yes || echo no'), 'no');
      // The new timeline archives into the same volume.
      await until('the history file of timeline 2 archived', 30_000, async () =>
        (await inDb(`ls ${ARCHIVE}/wal`)).includes('00000002.history'),
      );
      // No password in what the restore printed.
      for (const f of ['postgres_password', 'app_password']) assert.not.ok((r.stdout + r.stderr).includes(await readSecretFile(p!, f)), f);
    },
  );

  s('db:down removes the stack and keeps its volume: db:up again finds the rows', async ({ p }) => {
    const emails = async () => (await ok(['db:psql', '-At', '-c', 'SELECT email FROM accounts ORDER BY email'], p!.env)).stdout.trim();
    const before = await emails();
    assert.match(before, /^kept@example\.com$/m);
    await ok(['db:down'], p!.env);
    assert.is((await docker(['service', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${p!.name}`])).stdout.trim(), '');
    assert.is((await docker(['volume', 'ls', '--quiet', '--filter', `name=^${p!.name}_pg_data$`])).stdout.trim(), `${p!.name}_pg_data`);
    await ok(['db:up'], p!.env);
    assert.is(await emails(), before);
  });

  s('a failing migration fails db:migrate with one error line and a non-zero exit', async ({ p }) => {
    await fs.writeFile(path.join(p!.migrationsDir, '000002_broken.up.sql'), 'SELECT * FROM no_such_table;\n');
    await fs.writeFile(path.join(p!.migrationsDir, '000002_broken.down.sql'), 'SELECT 1;\n');
    const r = await cli(['db:migrate'], p!.env);
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: the db-migrate job exited with 1$/m);
    assert.is(r.stderr.split('\n').filter((l) => l.startsWith('error:')).length, 1, r.stderr);
    assert.match(r.stderr, /no_such_table/);
  });

  s(
    'db:replica deploys the standby into the stack, streaming, api-db untouched; db:promote fences api-db, and db:up refuses it',
    async ({ p }) => {
      const env = p!.env;
      const replicationSecrets = async () =>
        (await docker(['secret', 'ls', '--format', '{{.Name}}'])).stdout.split('\n').filter((n) => n.includes('_replication_'));
      // Every deploy so far ran without the replication secrets: none exists, and no standby.
      assert.equal(await replicationSecrets(), []);
      assert.not.ok(Object.keys(await serviceVersions(p!.name)).includes(`${p!.name}_api-db-replica`));
      const dbBefore = await taskContainer(p!.name, 'api-db');
      const r = await ok(['db:replica', '--json'], env);
      const out = JSON.parse(r.stdout);
      assert.is(out.action, 'built', r.stdout);
      assert.is(out.status.role, 'standby', r.stdout);
      assert.is(out.status.state, 'streaming', r.stdout);
      assert.is((await replicationSecrets()).length, 2);
      assert.is(await taskContainer(p!.name, 'api-db'), dbBefore, 'api-db was not restarted');
      const password = await readSecretFile(p!, 'replication_password');
      assert.not.ok((r.stdout + r.stderr).includes(password));
      assert.not.ok((await stackInspect(p!.name)).includes(password), 'the replication password appears in docker inspect output');
      // A row written on the primary is on the standby, read on its own socket.
      await ok(['db:psql', '-c', "INSERT INTO accounts (email) VALUES ('replicated@example.com')"], env);
      const standby = await taskContainer(p!.name, 'api-db-replica');
      await until('the row on the standby', 30_000, async () => {
        const q = await docker(['exec', '-i', standby, '/usr/local/bin/db-admin-sql', 'app'], {
          input: "SELECT count(*) FROM accounts WHERE email = 'replicated@example.com'",
        });
        return q.stdout.trim() === '1';
      });
      // db:up again changes neither: the standby's file is deployed on its own.
      const versions = await serviceVersions(p!.name);
      await ok(['db:up'], env);
      assert.equal(await serviceVersions(p!.name), versions);
      assert.is(await taskContainer(p!.name, 'api-db-replica'), standby);

      const pr = await ok(['db:promote', '--yes'], env);
      assert.match(pr.stdout, /promoted the standby/);
      assert.is(await taskContainer(p!.name, 'api-db'), '', 'the old primary is stopped');
      const w = await docker(['exec', '-i', standby, '/usr/local/bin/db-admin-sql', 'app'], {
        input: "INSERT INTO accounts (email) VALUES ('after-promote@example.com') RETURNING email",
      });
      assert.is(w.stdout.trim(), 'after-promote@example.com', 'the promoted standby takes writes');
      failsClearly(await cli(['db:up'], env), /api-db: its data directory is fenced: the standby on .* was promoted/, { hint: /Failover/ });
      assert.is(await taskContainer(p!.name, 'api-db'), '', 'and it stays stopped');
    },
  );

  s('db:delete --yes removes the stack, its volume, secrets and configs, and nothing of another stack', async ({ p }) => {
    // Another stack's objects, under a name that contains this one's.
    const other = `x${p!.name}`;
    await docker(['volume', 'create', '--label', `com.docker.stack.namespace=${other}`, `${other}_pg_data`]);
    await docker(['secret', 'create', '--label', `pg-deploy.stack=${other}`, `${other}_app_password_0`, '-'], { input: 'x' });
    await docker(['config', 'create', '--label', `pg-deploy.stack=${other}`, `${other}_pg_hba_conf_0`, '-'], { input: 'x' });
    await docker([
      'service',
      'create',
      '--detach',
      '--quiet',
      '--name',
      `${other}_idle`,
      '--label',
      `com.docker.stack.namespace=${other}`,
      IMAGES_ENV.NODE_IMAGE,
      'node',
      '-e',
      'setInterval(() => {}, 1 << 30)',
    ]);
    try {
      const objects = async (stack: string) =>
        [
          (await docker(['service', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`])).stdout,
          (await docker(['volume', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`])).stdout,
          (await docker(['secret', 'ls', '--quiet', '--filter', `label=pg-deploy.stack=${stack}`])).stdout,
          (await docker(['config', 'ls', '--quiet', '--filter', `label=pg-deploy.stack=${stack}`])).stdout,
        ].map((o) => o.split('\n').filter(Boolean).length);
      const before = await objects(other);
      assert.equal(before, [1, 1, 1, 1]);
      assert.ok((await objects(p!.name)).every((n) => n > 0));
      // api-db is stopped (db:promote fenced it above): no safety backup can be taken.
      await ok(['db:delete', '--yes', '--no-backup', '--force-production'], p!.env);
      assert.equal(await objects(p!.name), [0, 0, 0, 0]);
      assert.is((await docker(['node', 'ls', '--quiet', '--filter', `node.label=pg-deploy.${p!.name}.data=true`])).stdout.trim(), '');
      assert.equal(await objects(other), before);
    } finally {
      await docker(['service', 'rm', `${other}_idle`], { nothrow: true });
    }
  });

  s.run();
}

/** GET /health on a new connection (no keep-alive), with a 5 s limit; the reason when it is not a 200. */
function get(port: number): Promise<{ ok: boolean; why: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/health', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ ok: res.statusCode === 200, why: `${res.statusCode} ${body.trim()}` }));
      res.on('error', (e) => resolve({ ok: false, why: e.message }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (e) => resolve({ ok: false, why: e.message }));
  });
}

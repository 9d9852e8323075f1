import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { docker, engineSuite, makeDockerProject, cli, ok, until, type DockerProject } from './setup/docker.ts';
import { freePort, readSecretFile } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';
import { leaveSwarm, serviceVersions, startSwarm, swarmState, taskContainer } from './setup/swarm.ts';

// DB_TARGET=swarm on a single-node swarm this file starts (docker swarm init on loopback) and leaves
// (docker swarm leave --force) even on failure. An engine already in a swarm fails the suite: it is
// never touched. The stack has its own name, volume and free ports.

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
    ctx.p.env = { ...ctx.p.env, DB_TARGET: 'swarm', ENV_API_PORT: String(ctx.apiPort), ENV_API_REPLICAS: '1', DB_UP_TIMEOUT: '90' };
    await ok(['db:secrets'], ctx.p.env);
    await ok(['db:secure'], ctx.p.env);
  });
  s.after(async (ctx) => {
    if (ctx.started) await leaveSwarm();
    if (ctx.p) {
      await docker(['volume', 'rm', '--force', `${ctx.p.name}_pg_data`], { nothrow: true });
      await docker(['image', 'rm', '--force', `${ctx.p.name}-api`], { nothrow: true });
      await fs.rm(ctx.p.dir, { recursive: true, force: true });
    }
  });

  const health = async (port: number) => {
    const r = await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined);
    return r?.ok === true;
  };

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
    assert.equal(Object.keys(await serviceVersions(p.name)).sort(), [`${p.name}_api`, `${p.name}_api-db`, `${p.name}_db-migrate`]);
  });

  s('the secrets are tmpfs in the task, and no password is in docker service inspect or docker inspect', async ({ p }) => {
    const id = await taskContainer(p!.name, 'api-db');
    assert.ok(id, 'api-db runs');
    const mounts = (await docker(['exec', id, 'cat', '/proc/mounts'])).stdout;
    for (const name of ['postgres_password', 'app_password', 'server_key'])
      assert.match(mounts, new RegExp(`^tmpfs /run/secrets/${name} tmpfs ro`, 'm'), mounts);
    // In-memory too in the api's task.
    const api = await until('the api task', 60_000, () => taskContainer(p!.name, 'api'));
    assert.match((await docker(['exec', api, 'cat', '/proc/mounts'])).stdout, /^tmpfs \/run\/secrets\/app_password tmpfs/m);
    const ids = (await docker(['service', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${p!.name}`])).stdout
      .split('\n')
      .filter(Boolean);
    const containers = (await docker(['ps', '--all', '--quiet', '--filter', `label=com.docker.stack.namespace=${p!.name}`])).stdout
      .split('\n')
      .filter(Boolean);
    const secrets = (await docker(['secret', 'ls', '--quiet'])).stdout.split('\n').filter(Boolean);
    const seen = [
      (await docker(['service', 'inspect', ...ids])).stdout,
      (await docker(['inspect', ...containers])).stdout,
      (await docker(['secret', 'inspect', ...secrets])).stdout,
    ].join('\n');
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
    'rotating the app password moves the services to a new secret while the app stays up, and removes the old one',
    async ({ p, apiPort }) => {
      await until('the api healthy', 90_000, () => health(apiPort!));
      const secretNames = async () =>
        (await docker(['secret', 'ls', '--format', '{{.Name}}'])).stdout.split('\n').filter((n) => n.includes('_app_password_'));
      const [old] = await secretNames();
      const r = await ok(['db:secrets:rotate', 'app'], p!.env);
      assert.not.ok(r.stdout.includes(await readSecretFile(p!, 'app_password')));
      const now = await secretNames();
      assert.is(now.length, 1, now.join(' '));
      assert.is.not(now[0], old);
      const apiSpec = JSON.parse((await docker(['service', 'inspect', `${p!.name}_api`])).stdout)[0].Spec.TaskTemplate.ContainerSpec
        .Secrets;
      assert.ok(apiSpec.some((x: { SecretName: string }) => x.SecretName === now[0]));
      // The new task logs in with the new password.
      await until('the api healthy on the new secret', 90_000, () => health(apiPort!));
      await ok(['db:psql', '-c', 'SELECT 1'], p!.env);
      const doctor = await cli(['db:doctor'], p!.env);
      assert.ok(doctor.code === 0 || /warn/i.test(doctor.stdout + doctor.stderr), doctor.stdout + doctor.stderr);
    },
  );

  s('a failing migration fails db:migrate with one error line and a non-zero exit', async ({ p }) => {
    await fs.writeFile(path.join(p!.migrationsDir, '000002_broken.up.sql'), 'SELECT * FROM no_such_table;\n');
    await fs.writeFile(path.join(p!.migrationsDir, '000002_broken.down.sql'), 'SELECT 1;\n');
    const r = await cli(['db:migrate'], p!.env);
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: the db-migrate job exited with 1$/m);
    assert.is(r.stderr.split('\n').filter((l) => l.startsWith('error:')).length, 1, r.stderr);
    assert.match(r.stderr, /no_such_table/);
  });

  s.run();
}

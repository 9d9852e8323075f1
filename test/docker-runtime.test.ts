import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { cli, makeProject, removeProject, ROOT, type CliResult, type Project } from './setup/project.ts';
import { failsClearly } from './setup/assert.ts';
import { ENGINE_STUB, readCalls } from './setup/engine-stub.ts';
import { setUp } from './setup/hooks.ts';
import { testCtx } from './setup/ctx.ts';
import { dockerRuntime } from '@dbkit/core/runtime/docker';
import { DATA_VOLUME, composeEnv, engine } from '@dbkit/core/runtime/compose';
import { versionOf } from '@dbkit/core/runtime/docker-engine';
import { migrateArgs } from '@dbkit/core/migrations/command';
import { UsageError, UserError } from '@dbkit/core/errors';
import type { Exec, RunOptions } from '@dbkit/core/exec';

// What a real engine cannot show. What the docker runtime does with containers is tested against a
// real engine (test/docker-*.test.ts); here: the pieces that decide before any container is asked
// (argument arrays, versions, the refusals), and an installation that cannot run this project. No
// engine at all is made with DOCKER_HOST pointing at nothing; an engine or Compose too old, or
// Compose v2 missing, with the stub (test/setup/engine-stub.mjs).

interface Recorded {
  cmd: string;
  args: string[];
  opts: RunOptions;
}

/** An exec that records each call and answers it with `answer` (exit 0, nothing printed, by default). */
function recorder(answer: (cmd: string, args: readonly string[]) => { code?: number; stdout?: string } = () => ({})): {
  exec: Exec;
  calls: Recorded[];
} {
  const calls: Recorded[] = [];
  const exec: Exec = async (cmd, args, opts = {}) => {
    calls.push({ cmd, args: [...args], opts });
    const a = answer(cmd, args);
    return { code: a.code ?? 0, stdout: a.stdout ?? '', stderr: '' };
  };
  return { exec, calls };
}

// ---------------------------------------------------------------------------------------------
const unit = suite('the docker runtime decides before any container is asked');

unit('migrateArgs gives golang-migrate its own words: -all for every migration, and -1 after -- so Go does not read it as a flag', () => {
  assert.equal(migrateArgs({ kind: 'up' }), ['up']);
  assert.equal(migrateArgs({ kind: 'up', n: 2 }), ['up', '2']);
  assert.equal(migrateArgs({ kind: 'down', n: 1 }), ['down', '1']);
  assert.equal(migrateArgs({ kind: 'down', n: 'all' }), ['down', '-all']);
  assert.equal(migrateArgs({ kind: 'goto', version: 3 }), ['goto', '3']);
  assert.equal(migrateArgs({ kind: 'force', version: 3 }), ['force', '3']);
  assert.equal(migrateArgs({ kind: 'force', version: -1 }), ['force', '--', '-1']);
});

unit('Compose gets the port and the state folders as absolute paths, even when they are set relative to the project', () => {
  // Compose resolves a relative path against infra/, where the compose file is; the tool against the project root.
  const { cfg } = testCtx({
    DB_SECRETS_DIR: 'x/secrets',
    DB_SSL_DIR: 'x/ssl',
    DB_MIGRATIONS_DIR: 'x/migrations',
    ENV_DB_PORT: '6543',
    COMPOSE_PROJECT_NAME: 'pgdt-unit',
  });
  const env = composeEnv(cfg);
  assert.is(env.DB_SECRETS_DIR, path.join(ROOT, 'x/secrets'));
  assert.is(env.DB_SSL_DIR, path.join(ROOT, 'x/ssl'));
  assert.is(env.DB_MIGRATIONS_DIR, path.join(ROOT, 'x/migrations'));
  assert.is(env.ENV_DB_PORT, '6543');
  assert.is(env.COMPOSE_PROJECT_NAME, 'pgdt-unit');
});

unit('versionOf reads the versions distributions print, and nothing from a version without numbers', () => {
  assert.equal(versionOf('26.1.5+dfsg1\n'), [26, 1, 5]);
  assert.equal(versionOf('2.26.1-4'), [2, 26, 1]);
  assert.equal(versionOf('v2.29.0'), [2, 29, 0]);
  assert.equal(versionOf('25.0'), [25, 0, 0]);
  assert.is(versionOf('master-dockerproject-2024'), undefined);
});

unit('the volume hasData asks about is the one api-db keeps its data directory in', async () => {
  const yaml = createRequire(createRequire(import.meta.url).resolve('dclint/package.json'))('yaml') as { parse(text: string): unknown };
  const doc = yaml.parse(await fs.readFile(path.join(ROOT, 'infra/docker-compose.yml'), 'utf8')) as {
    volumes: Record<string, unknown>;
    services: Record<string, { volumes?: string[] }>;
  };
  assert.ok(DATA_VOLUME in doc.volumes, `the compose file declares no volume ${DATA_VOLUME}`);
  assert.ok(doc.services['api-db'].volumes?.includes(`${DATA_VOLUME}:/var/lib/postgresql/data`), 'api-db keeps its data elsewhere');
});

unit(
  "hasData asks the engine for the project's data volume by Compose's labels: one is data, none is none, no answer counts as data",
  async () => {
    const want = [
      'volume',
      'ls',
      '--quiet',
      '--filter',
      'label=com.docker.compose.project=pgdt-unit',
      '--filter',
      `label=com.docker.compose.volume=${DATA_VOLUME}`,
    ];
    assert.equal(engine.dataVolume('pgdt-unit'), want);
    for (const [answer, expected] of [
      [{ stdout: '9f86d081884c\n' }, true],
      [{ stdout: '' }, false],
      [{ code: 1 }, true],
    ] as const) {
      const r = recorder(() => answer);
      const rt = dockerRuntime(testCtx({ COMPOSE_PROJECT_NAME: 'pgdt-unit' }, { exec: r.exec }));
      assert.is(await rt.hasData(), expected, JSON.stringify(answer));
      assert.equal(
        r.calls.map((c) => [c.cmd, ...c.args]),
        [['docker', ...want]],
      );
    }
  },
);

unit('migrate --single-transaction is refused as a usage error before anything runs: golang-migrate has no such mode', async () => {
  const r = recorder();
  const rt = dockerRuntime(testCtx({}, { exec: r.exec }));
  const e = await rt.migrate({ kind: 'up' }, { singleTransaction: true }).then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.instance(e, UsageError);
  assert.match((e as Error).message, /^--single-transaction needs the native runtime/);
  assert.equal(r.calls, []);
});

unit(
  'migrate checks the text of every file, pending or not, before db-migrate runs: golang-migrate decides in its container what runs',
  async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-docker-migrate-'));
    try {
      await fs.writeFile(path.join(dir, '000001_a.up.sql'), 'CREATE TABLE a (id int);\n');
      await fs.writeFile(path.join(dir, '000001_a.down.sql'), 'DROP TABLE a;\n');
      await fs.writeFile(path.join(dir, '000002_b.up.sql'), '');
      await fs.writeFile(path.join(dir, '000002_b.down.sql'), 'SELECT 1;\n');
      const r = recorder();
      const rt = dockerRuntime(testCtx({ DB_MIGRATIONS_DIR: dir }, { exec: r.exec }));
      // down 1 from version 1 would never run 000002: the file is refused all the same.
      const e = await rt.migrate({ kind: 'down', n: 1 }).then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.instance(e, UserError);
      assert.match((e as Error).message, /000002_b\.up\.sql/);
      assert.equal(r.calls, [], 'db-migrate was not run');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  },
);

unit('target reads the seven secret files once per runtime, as the native runtime does', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-docker-target-'));
  try {
    const secrets = path.join(dir, 'secrets');
    await fs.mkdir(secrets);
    const values = {
      postgres_user: 'postgres',
      postgres_password: 'pw1',
      postgres_db: 'app',
      migrate_user: 'owner',
      migrate_password: 'pw2',
      app_user: 'app',
      app_password: 'pw3',
    };
    for (const [n, v] of Object.entries(values)) await fs.writeFile(path.join(secrets, n), v, { mode: 0o600 });
    await fs.writeFile(path.join(dir, 'ca.crt'), 'CA');
    const read: string[] = [];
    const counting = {
      ...fs,
      readFile: ((f: string, ...rest: unknown[]) => (
        read.push(path.basename(f)),
        (fs.readFile as (...a: unknown[]) => unknown)(f, ...rest)
      )) as typeof fs.readFile,
    };
    const rt = dockerRuntime(testCtx({ DB_SECRETS_DIR: secrets, DB_SSL_DIR: dir }, { exec: recorder().exec, fs: counting }));
    const app = await rt.target('app');
    const migrator = await rt.target('migrator');
    assert.equal([app.user, app.password, migrator.user, migrator.password, app.database], ['app', 'pw3', 'owner', 'pw2', 'app']);
    assert.is(read.filter((f) => f in values).length, 7);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

unit.run();

// ---------------------------------------------------------------------------------------------
interface Ctx {
  p?: Project;
  stubDir?: string;
}

const missing = suite<Ctx>('DB_RUNTIME=docker where Docker cannot run this project stops with one line and the fix');

setUp(missing, async (ctx) => {
  ctx.p = await makeProject();
  ctx.stubDir = await fs.mkdtemp(path.join(os.tmpdir(), 'docker-stub-'));
  for (const prog of ['docker', 'docker-compose']) {
    await fs.writeFile(path.join(ctx.stubDir, prog), `#!/bin/sh\nexec '${process.execPath}' '${ENGINE_STUB}' ${prog} "$@"\n`, {
      mode: 0o755,
    });
  }
});

missing.after(async (ctx) => {
  await removeProject(ctx.p);
  if (ctx.stubDir) await fs.rm(ctx.stubDir, { recursive: true, force: true });
});

/** The probes run at once, so what the stub was asked is compared in a fixed order (by its text). */
const inOrder = (calls: string[][]) => [...calls].sort((a, b) => a.join(' ').localeCompare(b.join(' ')));
const PROBE = inOrder([
  ['docker', 'compose', 'version', '--short'],
  ['docker', 'info', '--format', '{{.ServerVersion}}'],
]);

/** Runs a task with the stub standing for `docker` (and `docker-compose`), as `installation` describes it; returns what it was asked. */
async function withStub(
  ctx: Ctx,
  task: string[],
  installation: Record<string, string>,
  runtime = 'docker',
): Promise<{ r: CliResult; asked: string[][] }> {
  const log = path.join(ctx.stubDir!, 'calls.jsonl');
  await fs.writeFile(log, '');
  const r = await cli(task, {
    ...ctx.p!.env,
    PATH: `${ctx.stubDir}:${process.env.PATH}`,
    DOCKER_STUB_LOG: log,
    DB_RUNTIME: runtime,
    ...installation,
  });
  const asked = (await readCalls(log)).map((c) => [c.prog, ...c.argv]);
  return { r, asked: inOrder(asked) };
}

/** The real docker client, told to reach an engine at a socket that does not exist. */
async function withoutEngine(ctx: Ctx, task: string[], runtime: string): Promise<CliResult> {
  const nowhere = path.join(ctx.p!.dir, 'no-engine.sock');
  return cli(task, { ...ctx.p!.env, DB_RUNTIME: runtime, DOCKER_HOST: `unix://${nowhere}`, DOCKER_CONTEXT: undefined });
}

// Where the docker client itself (with its compose plugin) is not installed, the first thing missing is Compose.
const clientInstalled = spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' }).status === 0;
const NO_ENGINE = clientInstalled
  ? /no Docker engine answers/
  : /Docker Compose v2 is not installed|Compose v2 is installed as docker-compose|only Compose v1/;

missing('no engine answering is said, with the fix (the real docker client, DOCKER_HOST at nothing)', async (ctx) => {
  assert.match(
    failsClearly(await withoutEngine(ctx, ['db:logs'], 'docker'), NO_ENGINE, { hint: /DB_RUNTIME=native/, first: true }).error,
    /^error: DB_RUNTIME=docker but /,
  );
});

missing('DB_RUNTIME=auto falls back to the native runtime when no engine answers, and says why', async (ctx) => {
  const r = await withoutEngine(ctx, ['db:down'], 'auto');
  assert.is(r.code, 0, r.stdout + r.stderr);
  const said = /runtime: native \((.*); using the embedded PostgreSQL 16\)/.exec(r.stdout + r.stderr);
  assert.ok(said, r.stdout + r.stderr);
  assert.match(said[1], NO_ENGINE);
});

missing('an engine older than 25 is refused by name, and nothing is sent after the probe', async (ctx) => {
  const { r, asked } = await withStub(ctx, ['db:logs'], { DOCKER_STUB_ENGINE: '24.0.7' });
  assert.match(
    failsClearly(r, /Docker Engine 24\.0\.7 is too old: this tool needs 25 or newer, for the healthcheck's start_interval/, {
      hint: /upgrade Docker Engine.*DB_RUNTIME=native/,
      first: true,
    }).error,
    /^error: DB_RUNTIME=docker but /,
  );
  assert.equal(asked, PROBE);
});

missing('a Compose older than 2.20.2 is refused by name, and nothing is sent after the probe', async (ctx) => {
  const { r, asked } = await withStub(ctx, ['db:logs'], { DOCKER_STUB_COMPOSE: '2.20.1' });
  assert.match(
    failsClearly(r, /Docker Compose 2\.20\.1 is too old: this tool needs 2\.20\.2 or newer, for the healthcheck.s start_interval/, {
      hint: /upgrade the compose plugin.*DB_RUNTIME=native/,
      first: true,
    }).error,
    /^error: DB_RUNTIME=docker but /,
  );
  assert.equal(asked, PROBE);
});

missing('DB_RUNTIME=auto with an engine too old falls back to the native runtime and says why', async (ctx) => {
  const { r, asked } = await withStub(ctx, ['db:down'], { DOCKER_STUB_ENGINE: '24.0.7' }, 'auto');
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout + r.stderr, /runtime: native \(Docker Engine 24\.0\.7 is too old: .*; using the embedded PostgreSQL 16\)/);
  assert.equal(asked, PROBE, 'the native runtime asked docker nothing more');
});

missing('only Compose v1 (docker-compose) is refused, with the fix', async (ctx) => {
  const { r, asked } = await withStub(ctx, ['db:logs'], { DOCKER_STUB_COMPOSE: 'none', DOCKER_STUB_STANDALONE: '1.29.2' });
  assert.match(
    failsClearly(r, /only Compose v1 \(docker-compose\) is installed/, { hint: /docker-compose-plugin|DB_RUNTIME=native/, first: true })
      .error,
    /^error: DB_RUNTIME=docker but /,
  );
  assert.equal(asked, inOrder([...PROBE, ['docker-compose', 'version', '--short']]));
});

missing('Compose v2 installed only as the docker-compose program is not called v1: the fix links it as a plugin', async (ctx) => {
  const { r, asked } = await withStub(ctx, ['db:logs'], { DOCKER_STUB_COMPOSE: 'none', DOCKER_STUB_STANDALONE: '2.26.1-4' });
  assert.match(
    failsClearly(r, /Compose v2 is installed as docker-compose \(2\.26\.1-4\), but docker compose does not find it/, {
      hint: /cli-plugins\/docker-compose/,
      first: true,
    }).error,
    /^error: DB_RUNTIME=docker but /,
  );
  assert.not.match(r.stderr, /Compose v1/);
  assert.equal(asked, inOrder([...PROBE, ['docker-compose', 'version', '--short']]));
});

missing.run();

import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { connect, withClient } from '@dbkit/core/pg';
import { appTarget } from './setup/project.ts';
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
  startDockerProject,
  until,
  withStartedDockerProject,
  type DockerProject,
} from './setup/docker.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

// Faults on the real engine, each suite on its own Compose project: a crashed server, restarts, and
// a container whose healthcheck fails. Rows go in and come back as the application role over
// verify-full TLS from the host, as an application would see them.

interface Ctx {
  p?: DockerProject;
  /** The rows committed before the fault: count and a digest of their content. */
  rows?: { n: number; sum: string };
}

/** Bounds on waits (against hangs, not timing checks): the engine is shared by other tests on 2 CPUs. */
const BACK_WITHIN = 120_000;

/** A query as the application role over verify-full TLS; the session must be encrypted. */
async function appQuery(p: DockerProject, sql: string): Promise<Record<string, unknown>[]> {
  return withClient(await appTarget(p), async (c) => {
    const tls = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    assert.is(tls.rows[0].ssl, true, 'the session is TLS');
    return (await c.query(sql)).rows;
  });
}

const ROWS = "SELECT count(*)::int AS n, md5(coalesce(string_agg(email, ',' ORDER BY id), '')) AS sum FROM accounts";
const rowsNow = async (p: DockerProject) => (await appQuery(p, ROWS))[0] as { n: number; sum: string };
const serverStart = async (p: DockerProject) => String((await appQuery(p, 'SELECT pg_postmaster_start_time()::text AS t'))[0].t);

/** A project on the docker runtime, up and migrated, with rows committed by the application role. */
async function upWithRows(ctx: Ctx): Promise<void> {
  ctx.p = await makeDockerProject();
  await startDockerProject(ctx.p, { migrate: true });
  await appQuery(ctx.p, "INSERT INTO accounts (email) SELECT 'c' || i || '@example.com' FROM generate_series(1, 500) i");
  ctx.rows = await rowsNow(ctx.p);
  assert.is(ctx.rows.n, 500);
}

/** api-db healthy again and a TLS query answering; returns the server's start time. */
async function backHealthy(p: DockerProject, id: string): Promise<string> {
  await until('api-db healthy again', BACK_WITHIN, async () => (await inspectContainer(id)).health === 'healthy');
  return until('a TLS query as the application role', BACK_WITHIN, () => serverStart(p));
}

// ---------------------------------------------------------------------------------------------
const crash = engineSuite<Ctx>('a SIGKILLed server comes back by itself with every committed row');

if (crash) {
  setUp(crash, upWithRows);

  crash.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });

  crash(
    'after SIGKILL of its host PID, api-db is restarted by its restart policy, healthy, with every committed row and no uncommitted one',
    async (ctx) => {
      const p = ctx.p!;
      const id = await containerId(p, 'api-db');
      const before = await inspectContainer(id);
      assert.is(before.health, 'healthy');
      const startedBefore = await serverStart(p);
      // The server's main process, seen from the host (PID 1 inside the container).
      const cmdline = (await fs.readFile(`/proc/${before.pid}/cmdline`, 'utf8')).split('\0');
      assert.is(cmdline[0], 'postgres', `PID ${before.pid} is the server: ${cmdline.join(' ')}`);
      // One more committed row, and one in a transaction still open when the server dies.
      await appQuery(p, "INSERT INTO accounts (email) VALUES ('committed-last@example.com')");
      const committed = await rowsNow(p);
      const open = await connect(await appTarget(p));
      try {
        await open.query("BEGIN; INSERT INTO accounts (email) VALUES ('never-committed@example.com')");
        process.kill(before.pid, 'SIGKILL');
        const after = await until('api-db restarted by its restart policy', BACK_WITHIN, async () => {
          const s = await inspectContainer(id);
          return s.restarts > before.restarts && s.status === 'running' ? s : undefined;
        });
        assert.is.not(after.pid, before.pid, 'a new server process');
        const startedAfter = await backHealthy(p, id);
        assert.is.not(startedAfter, startedBefore, 'the server started again');
      } finally {
        await open.end().catch(() => {});
      }
      assert.is(await containerId(p, 'api-db'), id, 'the same container, restarted, not a new one');
      assert.equal(await rowsNow(p), committed, 'every committed row, the last one included');
      const ghost = await appQuery(p, "SELECT count(*)::int AS n FROM accounts WHERE email = 'never-committed@example.com'");
      assert.is(ghost[0].n, 0, 'the uncommitted row is gone');
      const status = await cli(['db:status'], p.env);
      assert.is(status.code, 0, status.stderr);
      assert.match(status.stdout, /^version\s+1$/m);
    },
  );

  crash.run();
}

// ---------------------------------------------------------------------------------------------
const restarts = engineSuite<Ctx>('restarting api-db keeps the data');

if (restarts) {
  setUp(restarts, upWithRows);

  restarts.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });

  restarts('docker compose restart api-db brings the server back healthy with the same rows', async (ctx) => {
    const p = ctx.p!;
    const id = await containerId(p, 'api-db');
    const startedBefore = await serverStart(p);
    const r = await compose(p, ['restart', 'api-db']);
    assert.is(r.code, 0, r.stderr);
    const startedAfter = await backHealthy(p, id);
    assert.is.not(startedAfter, startedBefore, 'the server was restarted');
    assert.equal(await rowsNow(p), ctx.rows);
  });

  restarts('db:down removes the container but keeps the volume, and db:up brings back the same rows', async (ctx) => {
    const p = ctx.p!;
    const startedBefore = await serverStart(p);
    const down = await ok(['db:down'], p.env);
    assert.match(down.stdout, /PostgreSQL stopped/);
    assert.is(await containerId(p, 'api-db'), '', 'no api-db container is left');
    const volumes = await docker(['volume', 'ls', '--quiet', '--filter', `name=^${p.name}_pg_data$`]);
    assert.is(volumes.stdout.trim(), `${p.name}_pg_data`, 'the data volume is kept');
    await ok(['db:up'], p.env);
    assert.is((await inspectContainer(await containerId(p, 'api-db'))).health, 'healthy');
    assert.is.not(await serverStart(p), startedBefore, 'a new server');
    assert.equal(await rowsNow(p), ctx.rows);
  });

  restarts.run();
}

// ---------------------------------------------------------------------------------------------
// A secret the healthcheck reads, emptied in place: the container sees it (a file secret is a bind
// mount of that very inode). Written again the way db:secrets writes (a new file renamed over it),
// the host's file is fine, so db:up's own checks pass, but the running container keeps the emptied
// one until it is recreated: its healthcheck fails, and Docker calls it unhealthy.
const staleSecret = engineSuite<Ctx>('db:up on a container whose healthcheck fails says api-db is unhealthy, why, and where to look');

if (staleSecret) {
  withStartedDockerProject(staleSecret);

  staleSecret(
    "db:up fails at once with one error line naming api-db, its health and the healthcheck's complaint, and a hint to pnpm db:logs",
    async (ctx) => {
      const p = ctx.p!;
      const file = path.join(p.secretsDir, 'app_user');
      const user = await fs.readFile(file, 'utf8');
      await fs.truncate(file, 0);
      await fs.writeFile(`${file}.new`, user, { mode: 0o600 });
      await fs.rename(`${file}.new`, file);
      const check = await compose(p, ['exec', '--no-TTY', 'api-db', '/usr/local/bin/db-healthcheck']);
      assert.is.not(check.code, 0, 'the healthcheck fails in the container');
      assert.match(check.stderr, /app_user is missing or empty/);
      const id = await containerId(p, 'api-db');
      // Five failures 10 s apart (the compose file's interval and retries) make it unhealthy.
      await until('Docker marks api-db unhealthy', 150_000, async () => (await inspectContainer(id)).health === 'unhealthy');
      const r = await cli(['db:up'], { ...p.env, DB_UP_TIMEOUT: '15' }, { timeoutMs: 75_000 });
      assert.not.ok(r.killed, `db:up did not exit:\n${r.stderr}`);
      failsClearly(
        r,
        /^error: api-db is unhealthy; its healthcheck says: db-healthcheck: secret \/run\/secrets\/app_user is missing or empty; create it with pnpm db:secrets, then recreate the container$/,
        { hint: /pnpm db:logs/ },
      );
      assert.not.match(r.stderr, new RegExp(`${p.name}-api-db-1`), 'the service is named, not the container');
    },
  );

  staleSecret('once the container is recreated (db:down, db:up) it reads the file again and db:up succeeds', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:down'], p.env);
    const r = await cli(['db:up'], { ...p.env, DB_UP_TIMEOUT: '60' }, { timeoutMs: 120_000 });
    assert.is(r.code, 0, r.stderr);
    assert.is((await inspectContainer(await containerId(p, 'api-db'))).health, 'healthy');
  });

  staleSecret.run();
}

// ---------------------------------------------------------------------------------------------
// A data directory left in standby mode (a standby.signal, as a restored physical backup brings,
// with hot_standby off): the server runs and refuses every connection, so the healthcheck never
// passes. Within its start period Docker still says "starting", and `up --wait` gives up only at
// its timeout: db:up must use DB_UP_TIMEOUT for it and then say what happened.
const neverReady = engineSuite<Ctx>(
  'db:up on a server that never accepts connections gives up after DB_UP_TIMEOUT and says api-db is unhealthy',
);

if (neverReady) {
  withStartedDockerProject(neverReady);

  neverReady(
    'db:up exits 1 once DB_UP_TIMEOUT has passed, with one error line naming api-db and the timeout, and a hint to pnpm db:logs',
    async (ctx) => {
      const p = ctx.p!;
      const sql = await compose(p, ['exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql'], {
        input: 'ALTER SYSTEM SET hot_standby = off',
      });
      assert.is(sql.code, 0, sql.stderr);
      const touch = await compose(p, [
        'exec',
        '--no-TTY',
        'api-db',
        'sh',
        '-c',
        'touch "$PGDATA/standby.signal" && chown postgres:postgres "$PGDATA/standby.signal"',
      ]);
      assert.is(touch.code, 0, touch.stderr);
      const restart = await compose(p, ['restart', 'api-db']);
      assert.is(restart.code, 0, restart.stderr);
      // The project's own DB_UP_TIMEOUT is 120 s: a db:up that ignored 15 would outlive this bound.
      const r = await cli(['db:up'], { ...p.env, DB_UP_TIMEOUT: '15' }, { timeoutMs: 60_000 });
      assert.not.ok(r.killed, `db:up did not exit:\n${r.stderr}`);
      // What pg_isready last said depends on how far the restarted server got (rejecting connections,
      // no response), and on a loaded machine Docker may have no check result yet: the quote is checked
      // by the test above, where the healthcheck's complaint does not depend on timing.
      failsClearly(r, /^error: api-db is unhealthy after 15s \(DB_UP_TIMEOUT\)(; its healthcheck says: 127\.0\.0\.1:5432 - [a-z ]+)?$/, {
        hint: /pnpm db:logs/,
      });
      const id = await containerId(p, 'api-db');
      assert.is.not((await inspectContainer(id)).health, 'healthy', 'the container really is not healthy');
    },
  );

  neverReady.run();
}

// ---------------------------------------------------------------------------------------------
const noImage = engineSuite<Ctx>('db:up with an image the engine does not have and cannot pull says which image, and the way out');

if (noImage) {
  setUp(noImage, async (ctx) => {
    ctx.p = await makeDockerProject();
    ctx.p.env.DB_IMAGE = 'pg-deploy-test/no-such-image:0';
    await ok(['db:secrets'], ctx.p.env);
    await ok(['db:secure'], ctx.p.env);
  });
  noImage.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });

  noImage(
    'one error line naming the image, and a hint to images:build, DB_IMAGE or the native runtime (not the server log, which has nothing)',
    async (ctx) => {
      const r = await cli(['db:up'], ctx.p!.env, { timeoutMs: 120_000 });
      failsClearly(r, /^error: could not get the image pg-deploy-test\/no-such-image:0: /, { hint: /images:build.*DB_RUNTIME=native/ });
      assert.not.match(r.stderr, /pnpm db:logs/);
    },
  );

  noImage.run();
}

// ---------------------------------------------------------------------------------------------
// Compose's view can lag the server's: a container still marked healthy whose server already turns
// sessions away (here a smart shutdown waiting on an open session; in the wild, the moments around a
// restart). `up --wait` returns at once, so db:up itself must wait out DB_UP_TIMEOUT and then say so,
// not fail on the first refused superuser session with psql's words.
const turnedAway = engineSuite<Ctx>('db:up on a container marked healthy whose server turns sessions away waits DB_UP_TIMEOUT');

if (turnedAway) {
  withStartedDockerProject(turnedAway);

  turnedAway('db:up waits while the server refuses sessions, then names api-db and DB_UP_TIMEOUT in one line', async (ctx) => {
    const p = ctx.p!;
    const id = await containerId(p, 'api-db');
    assert.is((await inspectContainer(id)).health, 'healthy');
    // A session the smart shutdown must wait for: the server then refuses every new one.
    const held = compose(p, ['exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql', 'postgres'], { input: 'SELECT pg_sleep(40)' });
    await until('the held session runs', 30_000, async () => {
      const r = await compose(p, ['exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql', 'postgres'], {
        input: "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(40)%'",
      });
      return r.code === 0 && r.stdout.trim() === '1';
    });
    const stop = await compose(p, ['exec', '--no-TTY', '--user', 'postgres', 'api-db', 'sh', '-c', 'pg_ctl stop -m smart -W -D "$PGDATA"']);
    assert.is(stop.code, 0, stop.stderr);
    assert.is((await inspectContainer(id)).health, 'healthy', 'Docker still says healthy: the next check is seconds away');
    const r = await cli(['db:up'], { ...p.env, DB_UP_TIMEOUT: '4' }, { timeoutMs: 60_000 });
    assert.not.ok(r.killed, `db:up did not exit:\n${r.stderr}`);
    failsClearly(r, /^error: api-db is unhealthy after 4s \(DB_UP_TIMEOUT\)(; its healthcheck says: .+)?$/, { hint: /pnpm db:logs/ });
    await held;
  });
  turnedAway.run();
}

import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, readSecretFile, type CliResult } from './setup/project.ts';
import {
  compose,
  containerId,
  docker,
  engineSuite,
  makeDockerProject,
  removeDockerProject,
  run,
  cli,
  startDockerProject,
  IMAGES_ENV,
  type DockerProject,
} from './setup/docker.ts';
import { setUp } from './setup/hooks.ts';

// The docker runtime against a real engine: `pnpm run deploy` as the README says, TLS as seen from
// the host and from the api container, the `app` profile, and what db:fresh and db:delete remove.
// Each suite has its own Compose project (name, network, volume, ports) and removes it in `after`.

/**
 * `pnpm run deploy` exactly as the README says, from the project root, on this Compose project. Its
 * output without colour codes: turbo colours its prefixes when FORCE_COLOR is set (uvu's runner sets it).
 */
async function pnpmDeploy(p: DockerProject): Promise<CliResult> {
  const r = await run('pnpm', ['run', 'deploy'], p.env);
  const plain = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');
  return { code: r.code, stdout: plain(r.stdout), stderr: plain(r.stderr) };
}

type Login = 'app' | 'migrate' | 'postgres';

/** libpq's psql on PATH (a client we did not write), the password in PGPASSWORD, never in argv. */
async function psql(p: DockerProject, sql: string, opts: { host?: string; sslmode?: string; login?: Login } = {}): Promise<CliResult> {
  const login = opts.login ?? 'app';
  return run('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    PGHOST: opts.host ?? 'localhost',
    PGPORT: String(p.port),
    PGUSER: await readSecretFile(p, `${login}_user`),
    PGPASSWORD: await readSecretFile(p, `${login}_password`),
    PGDATABASE: await readSecretFile(p, 'postgres_db'),
    PGSSLMODE: opts.sslmode ?? 'verify-full',
    PGSSLROOTCERT: path.join(p.sslDir, 'ca.crt'),
    PGCONNECT_TIMEOUT: '10',
  });
}

/** psql that must succeed: its rows, trimmed. */
async function query(p: DockerProject, sql: string, login: Login = 'app'): Promise<string> {
  const r = await psql(p, sql, { login });
  if (r.code !== 0) throw new Error(`psql as ${login} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

/** docker inspect's JSON, read field by field. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the engine's schema, not ours
type Json = any;

async function inspect(id: string): Promise<Json> {
  return JSON.parse((await docker(['inspect', id])).stdout)[0];
}

/** Docker's RFC 3339 times (nanoseconds, UTC) as nanoseconds since the epoch, so none is rounded away. */
function nanos(t: string): bigint {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(t);
  if (!m) throw new Error(`not a UTC RFC 3339 time: ${t}`);
  return BigInt(Date.parse(`${m[1]}Z`)) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

interface DockerEvent {
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  timeNano: number;
}

/**
 * Runs `fn` while streaming the engine's container events for this project; returns its result and
 * the events, once one that `until` accepts has arrived (or 30 s after `fn` ended). `docker compose
 * run --rm` removes the db-migrate container it made, and its `die` event (with the exit code) is
 * what is left of it. Streamed live, so other tests' events cannot push ours out of the engine's
 * buffer; the listener is stopped whatever happens.
 */
async function withEvents<T>(
  p: DockerProject,
  until: (e: DockerEvent) => boolean,
  fn: () => Promise<T>,
): Promise<{ result: T; events: DockerEvent[] }> {
  const since = Date.now();
  const child = spawn(
    'docker',
    [
      'events',
      '--since',
      String(Math.floor(since / 1000)),
      '--filter',
      'type=container',
      '--filter',
      `label=com.docker.compose.project=${p.name}`,
      '--format',
      '{{json .}}',
    ],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  const events: DockerEvent[] = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      const e = JSON.parse(line) as DockerEvent;
      if (e.timeNano / 1e6 >= since) events.push(e); // --since has whole seconds: none from before this call
    }
  });
  try {
    const result = await fn();
    for (let waited = 0; waited < 30_000 && !events.some(until) && child.exitCode === null; waited += 100)
      await new Promise((r) => setTimeout(r, 100));
    return { result, events: [...events] };
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
    await closed;
  }
}

const migrateDied = (e: DockerEvent) => e.Action === 'die' && e.Actor.Attributes['com.docker.compose.service'] === 'db-migrate';

/** Every secret and certificate file, byte for byte, with its mode. */
async function stateFiles(p: DockerProject): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const dir of [p.secretsDir, p.sslDir]) {
    for (const f of (await fs.readdir(dir)).sort()) {
      const full = path.join(dir, f);
      out[full] = `${((await fs.stat(full)).mode & 0o777).toString(8)} ${(await fs.readFile(full)).toString('base64')}`;
    }
  }
  return out;
}

/** The public schema as the catalog has it (tables by oid, columns, indexes) and golang-migrate's row. */
const SCHEMA_SQL = `SELECT concat_ws(E'\\n',
  (SELECT string_agg(format('%s %s', c.oid, c.relname), ',' ORDER BY c.relname) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace),
  (SELECT string_agg(format('%s.%s %s %s %s', table_name, column_name, data_type, is_nullable, column_default), ',' ORDER BY table_name, ordinal_position) FROM information_schema.columns WHERE table_schema = 'public'),
  (SELECT string_agg(indexdef, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'),
  (SELECT string_agg(format('%s %s', version, dirty), ',') FROM schema_migrations))`;

// ---------------------------------------------------------------------------------------------
interface DeployCtx {
  p?: DockerProject;
  first?: CliResult;
  firstEvents?: DockerEvent[];
}

const deploy = engineSuite<DeployCtx>('pnpm run deploy on the docker runtime (real engine)');

if (deploy) {
  setUp(deploy, async (ctx) => {
    ctx.p = await makeDockerProject();
    const { result, events } = await withEvents(ctx.p, migrateDied, () => pnpmDeploy(ctx.p!));
    ctx.first = result;
    ctx.firstEvents = events;
  });

  deploy.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });

  deploy('pnpm run deploy exits 0 after running secure, up and migrate in that order', ({ first }) => {
    assert.is(first!.code, 0, first!.stdout + first!.stderr);
    const order = ['@dbkit/db:secure', '@dbkit/db:up', '@dbkit/db:migrate'].map((t) => first!.stdout.indexOf(`${t}: `));
    assert.ok(
      order.every((i) => i >= 0),
      first!.stdout,
    );
    assert.equal(
      [...order].sort((a, b) => a - b),
      order,
    );
  });

  deploy('deploy made the seven secret files 0600 in a 0700 folder, and the CA and server certificate with private keys', async ({ p }) => {
    assert.is((await fs.stat(p!.secretsDir)).mode & 0o777, 0o700);
    const secrets = ['postgres_user', 'postgres_password', 'postgres_db', 'migrate_user', 'migrate_password', 'app_user', 'app_password'];
    assert.equal((await fs.readdir(p!.secretsDir)).sort(), [...secrets].sort());
    for (const n of secrets) assert.is((await fs.stat(path.join(p!.secretsDir, n))).mode & 0o777, 0o600, n);
    for (const n of ['postgres_password', 'migrate_password', 'app_password'])
      assert.match(await readSecretFile(p!, n), /^[A-Za-z0-9_-]{43,}$/);
    for (const f of ['ca.crt', 'server.crt'])
      assert.match(await fs.readFile(path.join(p!.sslDir, f), 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    for (const f of ['ca.key', 'server.key']) assert.is((await fs.stat(path.join(p!.sslDir, f))).mode & 0o777, 0o600, f);
  });

  deploy('api-db runs healthy in this Compose project, its port published on 127.0.0.1 only', async ({ p }) => {
    const c = await inspect(await containerId(p!, 'api-db'));
    assert.is(c.Config.Labels['com.docker.compose.project'], p!.name);
    assert.is(c.Config.Image, IMAGES_ENV.DB_IMAGE);
    assert.is(c.State.Status, 'running');
    assert.is(c.State.Health.Status, 'healthy');
    assert.equal(c.HostConfig.PortBindings['5432/tcp'], [{ HostIp: '127.0.0.1', HostPort: String(p!.port) }]);
  });

  deploy(
    'the application and migration roles were provisioned: TCP members, neither superuser nor able to create roles or databases',
    async ({ p }) => {
      const app = await readSecretFile(p!, 'app_user');
      const owner = await readSecretFile(p!, 'migrate_user');
      const roles = await query(
        p!,
        `SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, pg_has_role(rolname, 'pgdeploy_tcp', 'member') FROM pg_roles WHERE rolname IN ('${app}', '${owner}') ORDER BY rolname`,
      );
      assert.equal(roles.split('\n').sort(), [`${app}|f|f|f|t`, `${owner}|f|f|f|t`].sort());
      assert.is(await query(p!, 'SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()'), owner);
      assert.is(await query(p!, 'SELECT current_user', 'migrate'), owner);
    },
  );

  deploy('golang-migrate ran in a db-migrate container that exited 0 and left version 1, not dirty', async ({ p, first, firstEvents }) => {
    const died = firstEvents!.filter(migrateDied);
    assert.is(died.length, 1, JSON.stringify(firstEvents));
    assert.is(died[0].Actor.Attributes.exitCode, '0');
    assert.is(died[0].Actor.Attributes.image, IMAGES_ENV.MIGRATE_IMAGE);
    assert.match(first!.stdout, /@dbkit\/db:migrate: 1\/u create_accounts \(/); // golang-migrate's own line
    assert.is(await query(p!, 'SELECT version, dirty FROM schema_migrations'), '1|f');
    assert.is(await query(p!, "SELECT to_regclass('public.accounts') IS NOT NULL"), 't');
  });

  deploy('deploy ends by printing the status: the docker runtime, version 1, one applied and none pending', ({ first }) => {
    const status = first!.stdout.slice(first!.stdout.search(/@dbkit\/db:migrate: runtime/));
    assert.match(status, /^@dbkit\/db:migrate: runtime\s+docker/);
    assert.match(status, /@dbkit\/db:migrate: version\s+1\n/);
    assert.match(status, /@dbkit\/db:migrate: applied\s+1\n/);
    assert.match(status, /@dbkit\/db:migrate: pending\s+0\n/);
    assert.match(status, /applied 000001_create_accounts\.up\.sql/);
  });

  deploy(
    'a second deploy changes nothing: the same files byte for byte, the same api-db container, the same schema, and golang-migrate says no change',
    async ({ p }) => {
      const files = await stateFiles(p!);
      const id = await containerId(p!, 'api-db');
      const started = (await inspect(id)).State.StartedAt;
      const schema = await query(p!, SCHEMA_SQL, 'migrate');
      const { result: r, events: seen } = await withEvents(p!, migrateDied, () => pnpmDeploy(p!));
      assert.is(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /kept postgres_user, postgres_password, postgres_db, migrate_user, migrate_password, app_user, app_password/);
      assert.match(r.stdout, /certificates are valid; kept them/);
      assert.match(r.stdout, /@dbkit\/db:migrate: no change\n/);
      assert.not.match(r.stdout, /\/u create_accounts/);
      const died = seen.filter(migrateDied);
      assert.is(died.length, 1, JSON.stringify(seen));
      assert.is(died[0].Actor.Attributes.exitCode, '0');
      assert.equal(await stateFiles(p!), files);
      assert.is(await containerId(p!, 'api-db'), id);
      assert.is((await inspect(id)).State.StartedAt, started);
      assert.is(await query(p!, SCHEMA_SQL, 'migrate'), schema);
    },
  );

  deploy('from the host, libpq verify-full logs in as localhost and as 127.0.0.1, over TLS', async ({ p }) => {
    for (const host of ['localhost', '127.0.0.1']) {
      const r = await psql(p!, 'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()', { host });
      assert.is(r.code, 0, `${host}: ${r.stderr}`);
      assert.match(r.stdout.trim(), /^t\|TLSv1\.[23]$/, host);
    }
  });

  deploy('plaintext TCP is refused (sslmode=disable)', async ({ p }) => {
    const r = await psql(p!, 'SELECT 1', { host: '127.0.0.1', sslmode: 'disable' });
    assert.is.not(r.code, 0);
    assert.match(r.stderr, /pg_hba\.conf rejects connection .*no encryption/);
  });

  deploy(
    'the superuser is refused over TCP even with verify-full TLS, while its password works on the socket inside api-db',
    async ({ p }) => {
      for (const host of ['localhost', '127.0.0.1']) {
        const r = await psql(p!, 'SELECT 1', { host, login: 'postgres' });
        assert.is.not(r.code, 0, host);
        assert.match(r.stderr, /pg_hba\.conf rejects connection .*SSL encryption/, host);
      }
      const socket = await compose(p!, ['exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql', 'postgres'], {
        input: 'SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user',
      });
      assert.is(socket.code, 0, socket.stderr);
      assert.is(socket.stdout.trim(), `${await readSecretFile(p!, 'postgres_user')}\x1ft`);
    },
  );

  deploy(
    'with the app profile, db-migrate applies a new migration and exits 0 before api starts, and api becomes healthy',
    async ({ p }) => {
      // A migration that takes a second: were api started with db-migrate rather than after it
      // (service_started instead of service_completed_successfully), it would start before that ended.
      await fs.writeFile(
        path.join(p!.migrationsDir, '000002_create_notes.up.sql'),
        'SELECT pg_sleep(1);\nCREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);\n',
      );
      await fs.writeFile(path.join(p!.migrationsDir, '000002_create_notes.down.sql'), 'DROP TABLE notes;\n');
      p!.env.ENV_API_PORT = String(await freePort());
      const up = await compose(p!, ['--profile', 'app', 'up', '--detach', '--wait', '--wait-timeout', '180']);
      assert.is(up.code, 0, up.stdout + up.stderr);
      const migrate = await inspect(await containerId(p!, 'db-migrate'));
      const api = await inspect(await containerId(p!, 'api'));
      assert.is(migrate.State.Status, 'exited');
      assert.is(migrate.State.ExitCode, 0);
      assert.is(api.State.Status, 'running');
      assert.is(api.State.Health.Status, 'healthy');
      assert.ok(
        nanos(api.State.StartedAt) > nanos(migrate.State.FinishedAt),
        `api started ${api.State.StartedAt}, db-migrate finished ${migrate.State.FinishedAt}`,
      );
      const logs = await compose(p!, ['logs', '--no-color', 'db-migrate']);
      assert.match(logs.stdout, /2\/u create_notes \(/);
      assert.is(await query(p!, 'SELECT version, dirty FROM schema_migrations'), '2|f');
    },
  );

  deploy('GET /health from the host answers 200 {"status":"ok","tls":true}', async ({ p }) => {
    const r = await fetch(`http://127.0.0.1:${p!.env.ENV_API_PORT}/health`);
    assert.is(r.status, 200);
    assert.equal(await r.json(), { status: 'ok', tls: true });
  });

  deploy(
    'inside the api container the application verifies api-db with verify-full, and refuses an address the certificate does not name',
    async ({ p }) => {
      // The image's own server.mjs, a second copy on a loopback port inside the container, asked once.
      const script = `await import('/app/server.mjs');
for (let i = 0; ; i++) {
  try {
    const r = await fetch('http://127.0.0.1:18081/health');
    console.log(JSON.stringify({ status: r.status, body: await r.json() }));
    process.exit(0);
  } catch (e) {
    if (i === 50) throw e;
    await new Promise((r) => setTimeout(r, 100));
  }
}`;
      const ask = async (host: string) => {
        const r = await compose(p!, [
          'exec',
          '--no-TTY',
          '-e',
          'PORT=18081',
          '-e',
          'LISTEN_HOST=127.0.0.1',
          '-e',
          `DB_HOST=${host}`,
          'api',
          'node',
          '--input-type=module',
          '-e',
          script,
        ]);
        assert.is(r.code, 0, r.stdout + r.stderr);
        return JSON.parse(r.stdout.trim().split('\n').pop()!) as {
          status: number;
          body: { status: string; tls?: boolean; error?: string };
        };
      };
      assert.equal(await ask('api-db'), { status: 200, body: { status: 'ok', tls: true } });
      const db = await inspect(await containerId(p!, 'api-db'));
      const ip = (Object.values(db.NetworkSettings.Networks) as { IPAddress: string }[])[0].IPAddress;
      assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
      const wrong = await ask(ip);
      assert.is(wrong.status, 503);
      assert.match(wrong.body.error!, /does not match certificate's altnames/);
    },
  );

  deploy.run();
}

// ---------------------------------------------------------------------------------------------
interface DestroyCtx {
  p?: DockerProject;
  /** Volumes this suite made beside the project's, which nothing may remove: name -> CreatedAt. */
  bystanders?: Record<string, string>;
  rows?: string;
}

const destroy = engineSuite<DestroyCtx>(
  "db:fresh and db:delete on the docker runtime remove this project's volume and nothing else (real engine)",
);

const MARKER = '/var/lib/postgresql/data/pgdeploy-test-marker';

async function volumeCreatedAt(name: string): Promise<string | undefined> {
  const r = await docker(['volume', 'inspect', '--format', '{{.CreatedAt}}', name], { nothrow: true });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

async function bystandersNow(names: string[]): Promise<Record<string, string | undefined>> {
  const out: Record<string, string | undefined> = {};
  for (const n of names) out[n] = await volumeCreatedAt(n);
  return out;
}

if (destroy) {
  setUp(destroy, async (ctx) => {
    ctx.p = await makeDockerProject();
    const p = ctx.p;
    // Traps for a removal by name rather than by project: a volume whose name starts with this
    // project's volume name, and one that looks like another project's pg_data.
    const tag = randomBytes(3).toString('hex');
    const names = [`${p.name}_pg_data_keep${tag}`, `${p.name}${tag}_pg_data`];
    ctx.bystanders = {};
    await docker(['volume', 'create', names[0]]);
    await docker([
      'volume',
      'create',
      '--label',
      `com.docker.compose.project=${p.name}${tag}`,
      '--label',
      'com.docker.compose.volume=pg_data',
      names[1],
    ]);
    for (const n of names) ctx.bystanders[n] = (await volumeCreatedAt(n))!;
    await startDockerProject(p, { migrate: true });
    await query(p, "INSERT INTO accounts (email) VALUES ('one@example.com'), ('two@example.com')");
    ctx.rows = await query(p, 'SELECT count(*) FROM accounts');
    if (ctx.rows !== '2') throw new Error(`expected 2 rows before db:fresh, found ${ctx.rows}`);
    const mark = await compose(p, ['exec', '--no-TTY', 'api-db', 'touch', MARKER]);
    if (mark.code !== 0) throw new Error(`could not mark the volume: ${mark.stderr}`);
  });

  destroy.after(async (ctx) => {
    await removeDockerProject(ctx.p);
    if (ctx.bystanders) await docker(['volume', 'rm', '--force', ...Object.keys(ctx.bystanders)], { nothrow: true });
  });

  destroy(
    "db:fresh --yes --no-backup replaces this project's volume and container and leaves the bystander volumes as they were",
    async ({ p, bystanders }) => {
      const before = await containerId(p!, 'api-db');
      const had = await compose(p!, ['exec', '--no-TTY', 'api-db', 'test', '-e', MARKER]);
      assert.is(had.code, 0, 'the marker is in the volume before db:fresh');
      const r = await cli(['db:fresh', '--yes', '--no-backup'], p!.env);
      assert.is(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /fresh database ready/);
      const after = await containerId(p!, 'api-db');
      assert.ok(after && after !== before, 'api-db is a new container');
      const gone = await compose(p!, ['exec', '--no-TTY', 'api-db', 'test', '-e', MARKER]);
      assert.is(gone.code, 1, `the marker is gone: ${gone.stderr}`);
      assert.ok(await volumeCreatedAt(`${p!.name}_pg_data`), 'the project volume exists again');
      assert.equal(await bystandersNow(Object.keys(bystanders!)), bystanders);
    },
  );

  destroy('after db:fresh the database is up, migrated to version 1 and holds none of the rows inserted before', async ({ p }) => {
    const c = await inspect(await containerId(p!, 'api-db'));
    assert.is(c.State.Health.Status, 'healthy');
    assert.is(await query(p!, 'SELECT version, dirty FROM schema_migrations'), '1|f');
    assert.is(await query(p!, 'SELECT count(*) FROM accounts'), '0');
  });

  destroy(
    "db:delete --yes --no-backup removes this project's containers (the app profile's too) and volume and leaves the bystander volumes as they were",
    async ({ p, bystanders }) => {
      assert.ok(await volumeCreatedAt(`${p!.name}_pg_data`), 'the project volume exists before db:delete');
      p!.env.ENV_API_PORT = String(await freePort());
      const app = await compose(p!, ['--profile', 'app', 'up', '--detach', '--wait', '--wait-timeout', '180']);
      assert.is(app.code, 0, app.stderr);
      assert.ok(await containerId(p!, 'api'), 'api runs before db:delete');
      const r = await cli(['db:delete', '--yes', '--no-backup'], p!.env);
      assert.is(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /deleted /);
      assert.is(await volumeCreatedAt(`${p!.name}_pg_data`), undefined);
      assert.is((await compose(p!, ['--profile', 'app', 'ps', '--all', '--quiet'])).stdout.trim(), '');
      assert.equal(await bystandersNow(Object.keys(bystanders!)), bystanders);
      const refused = await psql(p!, 'SELECT 1');
      assert.is.not(refused.code, 0);
    },
  );

  destroy.run();
}

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { compose } from '@dbkit/core/runtime/compose';
import { OFFICIAL_IMAGES } from '@dbkit/core/config';
import { STAND_INS } from '@dbkit/core/images';
import { makeProject, ok, removeProject, run, ROOT, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// dclint's own YAML parser, reached through dclint: no extra dependency for one parse.
const requireFromDclint = createRequire(createRequire(import.meta.url).resolve('dclint/package.json'));
const YAML = requireFromDclint('yaml') as { parse(text: string): unknown };

const INFRA = path.join(ROOT, 'infra');
const FILE = path.join(INFRA, 'docker-compose.yml');

type Dict = Record<string, unknown>;
interface Service extends Dict {
  image?: string;
  build?: string | { context: string; args?: Record<string, string> };
  environment?: Record<string, string> | string[];
  secrets?: (string | { source: string })[];
  ports?: string[];
  volumes?: string[];
  depends_on?: Record<string, { condition: string }> | string[];
  healthcheck?: { test: string[]; start_period?: string; start_interval?: string; interval?: string };
  command?: string[] | string;
  entrypoint?: string[] | string;
  restart?: string;
  profiles?: string[];
  stop_grace_period?: string;
}
interface ComposeFile {
  name?: string;
  version?: string;
  services: Record<string, Service>;
  volumes?: Dict;
  secrets: Record<string, { file: string }>;
}

/** Compose's interpolation for the forms this file uses: ${VAR}, ${VAR:-default}. */
function interpolate(s: string, env: Record<string, string | undefined>): string {
  return s.replace(/\$\{([A-Z0-9_]+)(?::-([^}]*))?\}/g, (_, name: string, def?: string) => env[name] || def || '');
}

/** Docker's durations: 1m30s, 500ms, 10s. */
function composeDuration(d: string | undefined): number {
  if (!d) return NaN;
  let total = 0;
  for (const [, n, unit] of d.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g))
    total += Number(n) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as 'ms']!;
  return total;
}

const envOf = (s: Service): Record<string, string> =>
  Array.isArray(s.environment) ? Object.fromEntries(s.environment.map((e) => e.split(/=(.*)/s).slice(0, 2))) : (s.environment ?? {});
const secretNames = (s: Service) => (s.secrets ?? []).map((x) => (typeof x === 'string' ? x : x.source));
/** Short-syntax bind mounts: [host path (resolved against infra/), container path, options]. */
const binds = (s: Service, env: Record<string, string | undefined> = {}) =>
  (s.volumes ?? [])
    .map((v) => interpolate(v, env).split(':'))
    .filter(([host]) => host.startsWith('.') || host.startsWith('/'))
    .map(([host, target, opts]) => ({ host: path.resolve(INFRA, host), target, opts: opts ?? '' }));

// ---------------------------------------------------------------------------------------------
const lint = suite('infra/docker-compose.yml under dclint');

lint('passes dclint, the real linter, with no error and no warning', async () => {
  const r = await run(path.join(ROOT, 'node_modules/.bin/dclint'), ['infra/docker-compose.yml'], {});
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.not.match(r.stdout + r.stderr, /warning|error/i);
});

lint('turns off a rule in .dclintrc only with a one-line reason above it', async () => {
  const lines = (await fs.readFile(path.join(ROOT, '.dclintrc'), 'utf8')).split('\n');
  lines.forEach((line, i) => {
    if (/^\s+[a-z-]+:\s*0\s*$/.test(line)) assert.match(lines[i - 1], /^\s+# \S/, `no reason above: ${line.trim()}`);
  });
});

lint.run();

// ---------------------------------------------------------------------------------------------
const policy = suite<{ doc: ComposeFile; text: string }>('infra/docker-compose.yml policy');

policy.before(async (ctx) => {
  ctx.text = await fs.readFile(FILE, 'utf8');
  ctx.doc = YAML.parse(ctx.text) as ComposeFile;
});

policy('has no obsolete version key and names its project', ({ doc }) => {
  assert.not.ok('version' in doc);
  assert.is(doc.name, 'pg-deploy');
});

policy('defines the three services of the guide, and the standby', ({ doc }) => {
  assert.equal(Object.keys(doc.services).sort(), ['api', 'api-db', 'api-db-replica', 'db-migrate']);
});

policy('keeps the standby behind the replica profile, on its own volume and a loopback port, with the replication secrets', ({ doc }) => {
  const r = doc.services['api-db-replica'];
  assert.equal(r.profiles, ['replica']);
  assert.is(r.image, doc.services['api-db'].image);
  assert.ok(doc.volumes && 'pg_replica_data' in doc.volumes);
  assert.ok(r.volumes!.includes('pg_replica_data:/var/lib/postgresql/data'));
  assert.equal(r.ports, ['127.0.0.1:${DB_REPLICA_PORT:-5433}:5432']);
  assert.equal(envOf(r), { PGDATA: envOf(doc.services['api-db']).PGDATA });
  for (const n of ['replication_user', 'replication_password', 'server_key', 'server_crt', 'ca_crt'])
    assert.ok(secretNames(r).includes(n), n);
  // The password file's tmpfs; no service but the standby gets the replication password.
  assert.equal((r as { tmpfs?: string[] }).tmpfs, ['/run/pgdeploy']);
  for (const [name, s] of Object.entries(doc.services))
    if (name !== 'api-db-replica') assert.not.ok(secretNames(s).includes('replication_password'), name);
  const targets = new Set(binds(r).map((m) => m.target));
  for (const t of [
    (r.entrypoint as string[])[0],
    '/usr/local/bin/db-start',
    r.healthcheck!.test[1],
    compose.replicaAdminSql('f', 'postgres').find((a) => a.startsWith('/usr/local/bin/'))!,
  ])
    assert.ok(targets.has(t), `${t} is mounted in api-db-replica`);
});

policy('gives every service an image or a build, so Compose accepts the file', ({ doc }) => {
  for (const [name, s] of Object.entries(doc.services)) assert.ok(s.image || s.build, name);
});

policy('pins every image to a concrete tag by default: postgres:16-alpine, migrate/migrate:v4.18.3, node:20-alpine', async ({ doc }) => {
  for (const [name, s] of Object.entries(doc.services)) {
    if (!s.image) continue;
    const tag = interpolate(s.image, {}).split('/').pop()!.split(':')[1];
    assert.ok(tag, `${name} has no tag`);
    assert.not.match(tag, /^(latest|stable|edge|nightly)$/, name);
  }
  assert.is(interpolate(doc.services['api-db'].image!, {}), OFFICIAL_IMAGES.db);
  assert.is(interpolate(doc.services['db-migrate'].image!, {}), OFFICIAL_IMAGES.migrate);
  const build = doc.services.api.build as { context: string; args: Record<string, string> };
  assert.is(interpolate(build.args.NODE_IMAGE, {}), OFFICIAL_IMAGES.node);
  // The Dockerfile's own default, for a `docker build` without compose.
  assert.match(await fs.readFile(path.join(ROOT, 'packages/api/Dockerfile'), 'utf8'), /^ARG NODE_IMAGE=node:20-alpine$/m);
  assert.equal(OFFICIAL_IMAGES, { db: 'postgres:16-alpine', migrate: 'migrate/migrate:v4.18.3', node: 'node:20-alpine' });
});

policy('lets DB_IMAGE, MIGRATE_IMAGE and NODE_IMAGE replace the images (a private registry, a digest pin, the stand-ins)', ({ doc }) => {
  const env = {
    DB_IMAGE: 'registry.example/pg@sha256:' + 'a'.repeat(64),
    MIGRATE_IMAGE: 'registry.example/migrate:v4.18.3',
    NODE_IMAGE: 'registry.example/node:20',
  };
  assert.is(interpolate(doc.services['api-db'].image!, env), env.DB_IMAGE);
  assert.is(interpolate(doc.services['db-migrate'].image!, env), env.MIGRATE_IMAGE);
  assert.is(interpolate((doc.services.api.build as { args: Record<string, string> }).args.NODE_IMAGE, env), env.NODE_IMAGE);
});

policy('tags the local stand-ins under our own name, never an official one', () => {
  for (const tag of Object.values(STAND_INS)) {
    assert.match(tag, /^pg-deploy-test\//, tag);
    assert.not.ok(Object.values(OFFICIAL_IMAGES).includes(tag), tag);
  }
});

policy('publishes ports on 127.0.0.1 only', ({ doc }) => {
  for (const [name, s] of Object.entries(doc.services)) {
    for (const p of s.ports ?? []) assert.match(interpolate(p, {}), /^127\.0\.0\.1:\d+:\d+$/, `${name}: ${p}`);
  }
  assert.equal(doc.services['api-db'].ports, ['127.0.0.1:${ENV_DB_PORT:-5432}:5432']);
});

policy('passes credentials as *_FILE paths under /run/secrets, never as values in the environment', ({ doc }) => {
  for (const [name, s] of Object.entries(doc.services)) {
    for (const [k, v] of Object.entries(envOf(s))) {
      if (/PASS|SECRET|TOKEN|KEY|USER|_DB$/i.test(k)) {
        assert.match(k, /_FILE$/, `${name}: ${k}`);
        assert.match(String(v), /^\/run\/secrets\/[a-z_]+$/, `${name}: ${k}`);
      }
    }
  }
  const env = envOf(doc.services['api-db']);
  assert.equal(
    [env.POSTGRES_USER_FILE, env.POSTGRES_PASSWORD_FILE, env.POSTGRES_DB_FILE],
    ['/run/secrets/postgres_user', '/run/secrets/postgres_password', '/run/secrets/postgres_db'],
  );
  assert.is(env.PGDATA, '/var/lib/postgresql/data/pgdata');
});

policy('names in each *_FILE a secret the service mounts', ({ doc }) => {
  for (const [name, s] of Object.entries(doc.services)) {
    for (const [k, v] of Object.entries(envOf(s))) {
      if (k.endsWith('_FILE')) assert.ok(secretNames(s).includes(path.basename(String(v))), `${name}: ${k}`);
    }
  }
});

policy('mounts only secrets the file defines, and defines none it does not use', ({ doc }) => {
  const used = new Set(Object.values(doc.services).flatMap(secretNames));
  assert.equal([...used].sort(), Object.keys(doc.secrets).sort());
});

policy("gives each role only its own password: the superuser's stays in api-db", ({ doc }) => {
  assert.equal(
    secretNames(doc.services['db-migrate']).filter((n) => n.endsWith('password')),
    ['migrate_password'],
  );
  assert.equal(
    secretNames(doc.services.api).filter((n) => n.endsWith('password')),
    ['app_password'],
  );
  assert.not.ok(secretNames(doc.services['api-db']).includes('migrate_password'));
});

policy('reads secret files from database/infra/secrets and database/infra/ssl by default', ({ doc }) => {
  for (const [name, s] of Object.entries(doc.secrets)) {
    const file = path.resolve(INFRA, interpolate(s.file, {}));
    assert.match(path.relative(ROOT, file), /^database\/infra\/(secrets|ssl)\/[a-z_.]+$/, name);
  }
});

policy('keeps the data in a named volume', ({ doc }) => {
  assert.ok(doc.volumes && 'pg_data' in doc.volumes);
  assert.ok(doc.services['api-db'].volumes!.includes('pg_data:/var/lib/postgresql/data'));
});

policy('mounts the configuration read-only where postgresql.conf and the image look for it', async ({ doc }) => {
  const mounts = binds(doc.services['api-db']);
  const conf = await fs.readFile(path.join(ROOT, 'database/infra/config/postgresql.conf'), 'utf8');
  const hba = /^hba_file\s*=\s*'([^']+)'/m.exec(conf)![1];
  for (const [file, target] of [
    ['postgresql.conf', '/etc/postgresql/postgresql.conf'],
    ['pg_hba.conf', hba],
  ]) {
    const m = mounts.find((x) => x.target === target);
    assert.ok(m, `${target} is not mounted`);
    assert.is(m!.host, path.join(ROOT, 'database/infra/config', file));
    assert.is(m!.opts, 'ro');
  }
  // start.sh installs the TLS files where postgresql.conf expects them.
  const start = await fs.readFile(path.join(ROOT, 'database/infra/scripts/start.sh'), 'utf8');
  const tlsDir = /TLS_DIR="\$\{TLS_DIR:-([^}]+)\}"/.exec(start)![1];
  assert.match(conf, new RegExp(`^ssl_cert_file = '${tlsDir}/server.crt'`, 'm'));
  assert.match(conf, new RegExp(`^ssl_key_file = '${tlsDir}/server.key'`, 'm'));
  assert.match(start, /config_file=\/etc\/postgresql\/postgresql\.conf/);
});

policy('bind-mounts only files that exist, read-only, scripts executable', async ({ doc }) => {
  for (const [name, s] of Object.entries(doc.services)) {
    for (const m of binds(s)) {
      const st = await fs.stat(m.host).catch(() => undefined);
      assert.ok(st, `${name}: ${m.host} does not exist`);
      assert.is(m.opts, 'ro', `${name}: ${m.target}`);
      if (m.host.endsWith('.sh')) assert.ok(st!.mode & 0o111, `${m.host} is not executable`);
    }
  }
});

policy('mounts every in-container command the docker runtime calls', ({ doc }) => {
  const targets = new Set(binds(doc.services['api-db']).map((m) => m.target));
  const calls = [compose.psql('f', []), compose.adminSql('f', 'postgres'), compose.installTls('f')];
  for (const argv of calls) {
    const cmd = argv.find((a) => a.startsWith('/usr/local/bin/'));
    assert.ok(cmd && targets.has(cmd), `${cmd} is not mounted in api-db`);
  }
  const entry = doc.services['api-db'].entrypoint as string[];
  assert.ok(targets.has(entry[0]), 'the entrypoint is mounted');
});

policy('mounts what a mounted script sources beside it, where `$(dirname "$0")` finds it', async ({ doc }) => {
  let sourcing = 0;
  for (const [name, s] of Object.entries(doc.services)) {
    const mounts = binds(s);
    for (const m of mounts.filter((b) => b.host.endsWith('.sh'))) {
      for (const [, file] of (await fs.readFile(m.host, 'utf8')).matchAll(/^\. "\$\(dirname "\$0"\)\/([^"]+)"$/gm)) {
        sourcing++;
        const beside = path.posix.join(path.posix.dirname(m.target), file);
        assert.ok(
          mounts.some((b) => b.target === beside),
          `${name}: ${m.target} sources ${beside}, which is not mounted`,
        );
      }
    }
  }
  assert.ok(sourcing >= 3, 'the api-db scripts share read_secret from db-secrets.sh');
});

policy('checks health over TCP, quickly at start: start_period and a start_interval of a second or less', async ({ doc }) => {
  const hc = doc.services['api-db'].healthcheck!;
  assert.ok(composeDuration(hc.start_period) > 0);
  assert.ok(composeDuration(hc.start_interval) > 0 && composeDuration(hc.start_interval) <= 1000, hc.start_interval);
  const script = binds(doc.services['api-db']).find((m) => m.target === hc.test[1]);
  assert.is(hc.test[0], 'CMD');
  assert.ok(script, 'the healthcheck runs a mounted script');
  const text = await fs.readFile(script!.host, 'utf8');
  assert.match(text, /pg_isready -h 127\.0\.0\.1 /);
});

policy("gives api-db more than Docker's default 10 s to shut down", ({ doc }) => {
  assert.ok(composeDuration(doc.services['api-db'].stop_grace_period) > 10_000);
});

policy("runs migrations by default: db-migrate's command is up, through run-migration.sh, never restarted", ({ doc }) => {
  const m = doc.services['db-migrate'];
  assert.equal(m.command, ['up']);
  assert.equal(m.entrypoint, ['/usr/local/bin/run-migration.sh']);
  assert.ok(
    binds(m).some((b) => b.target === '/usr/local/bin/run-migration.sh' && b.host.endsWith('database/infra/scripts/run-migration.sh')),
  );
  assert.ok(binds(m).some((b) => b.target === '/migrations' && b.host === path.join(ROOT, 'database/migrations')));
  assert.is(m.restart, 'no');
});

policy('starts db-migrate once api-db is healthy, and api once db-migrate has finished successfully', ({ doc }) => {
  assert.equal(doc.services['db-migrate'].depends_on, { 'api-db': { condition: 'service_healthy' } });
  const api = doc.services.api.depends_on as Record<string, { condition: string }>;
  assert.is(api['db-migrate'].condition, 'service_completed_successfully');
});

policy('makes api optional behind a profile, built from packages/api', async ({ doc }) => {
  const api = doc.services.api;
  assert.equal(api.profiles, ['app']);
  assert.is((api.build as { context: string }).context, '../packages/api');
  await fs.stat(path.join(INFRA, '../packages/api/Dockerfile'));
});

policy('addresses services through Compose: no container_name', ({ doc }) => {
  for (const [name, s] of Object.entries(doc.services)) assert.not.ok('container_name' in s, name);
});

policy('says truthfully that outside Swarm file secrets are read-only bind mounts of the host files', ({ text }) => {
  assert.match(text, /outside Swarm/i);
  assert.match(text, /bind-mounts the host\s*\n?#?\s*files read-only/);
});

policy.run();

// ---------------------------------------------------------------------------------------------
const files = suite<{ p?: Project; doc?: ComposeFile }>('the files Compose reads, after db:secrets and db:secure');

setUp(files, async (ctx) => {
  ctx.doc = YAML.parse(await fs.readFile(FILE, 'utf8')) as ComposeFile;
  ctx.p = await makeProject();
  await ok(['db:secrets'], ctx.p.env);
  await ok(['db:secure'], ctx.p.env);
});

files.after(async (ctx) => {
  await removeProject(ctx.p);
});

files("exist for every secret but the standby's, with the folders the tasks hand Compose", async ({ p, doc }) => {
  const env = { DB_SECRETS_DIR: p!.secretsDir, DB_SSL_DIR: p!.sslDir };
  for (const [name, s] of Object.entries(doc!.secrets)) {
    // pnpm db:replica makes these; only the replica profile's service mounts them.
    if (name.startsWith('replication_')) continue;
    const file = path.resolve(INFRA, interpolate(s.file, env));
    const st = await fs.stat(file).catch(() => undefined);
    assert.ok(st && st.size > 0, `secret ${name}: ${file} is missing or empty`);
  }
});

files('include the migrations folder the tasks hand Compose', async ({ p, doc }) => {
  const m = binds(doc!.services['db-migrate'], { DB_MIGRATIONS_DIR: p!.migrationsDir }).find((b) => b.target === '/migrations');
  assert.is(m!.host, p!.migrationsDir);
  assert.ok((await fs.readdir(p!.migrationsDir)).some((f) => f.endsWith('.up.sql')));
});

files.run();

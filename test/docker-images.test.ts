import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { INPUTS_LABEL, STAND_INS } from '@dbkit/core/images';
import { OFFICIAL_IMAGES } from '@dbkit/core/config';
import { docker, engineSuite, ensureImages } from './setup/docker.ts';
import { ok, run } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// The stand-ins of `pnpm images:build`, held against the contract of the official images they stand
// for (../shared/docs/facts.md; docker-library/postgres's docker-entrypoint.sh), on the real engine.

interface Inspect {
  Config: {
    Env: string[];
    Entrypoint: string[] | null;
    Cmd: string[] | null;
    StopSignal?: string;
    Volumes: Record<string, object> | null;
    Labels: Record<string, string> | null;
  };
}
const inspect = async (tag: string): Promise<Inspect> => JSON.parse((await docker(['image', 'inspect', tag])).stdout)[0];

/** `docker run --rm` of a stand-in, returning its output; `entrypoint` replaces the image's. */
async function runIn(
  tag: string,
  args: string[],
  opts: { entrypoint?: string; env?: Record<string, string>; volumes?: string[]; nothrow?: boolean } = {},
) {
  const flags = [
    ...(opts.entrypoint ? ['--entrypoint', opts.entrypoint] : []),
    ...Object.keys(opts.env ?? {}).flatMap((k) => ['--env', k]), // values from our environment: none in argv
    ...(opts.volumes ?? []).flatMap((v) => ['--volume', v]),
  ];
  const r = await run('docker', ['run', '--rm', ...flags, tag, ...args], opts.env ?? {});
  if (r.code !== 0 && !opts.nothrow) throw new Error(`docker run ${tag} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r;
}

// ---------------------------------------------------------------------------------------------
const build = engineSuite('pnpm images:build');
if (build) {
  setUp(build, async () => ensureImages());

  build('a second build reuses all four images, because their recorded inputs are unchanged', async () => {
    const r = await ok(['images:build', '--json'], {});
    const out = JSON.parse(r.stdout) as { built: string[]; reused: string[]; images: Record<string, string> };
    assert.equal(out.built, []);
    assert.equal([...out.reused].sort(), ['pg-deploy-test/debian:trixie', STAND_INS.db, STAND_INS.migrate, STAND_INS.node].sort());
    for (const tag of out.reused) assert.match((await inspect(tag)).Config.Labels?.[INPUTS_LABEL] ?? '', /^[0-9a-f]{64}$/, tag);
  });

  build('--print-env prints exactly the three KEY=value lines on stdout', async () => {
    const r = await ok(['images:build', '--print-env'], {});
    assert.is(r.stdout, `DB_IMAGE=${STAND_INS.db}\nMIGRATE_IMAGE=${STAND_INS.migrate}\nNODE_IMAGE=${STAND_INS.node}\n`);
  });

  build('no stand-in carries an official name, and no official name is tagged on this engine by the build', async () => {
    for (const tag of Object.values(STAND_INS)) assert.not.ok(Object.values(OFFICIAL_IMAGES).includes(tag));
    for (const official of Object.values(OFFICIAL_IMAGES)) {
      const labels = await docker(['image', 'inspect', '--format', `{{index .Config.Labels "${INPUTS_LABEL}"}}`, official], {
        nothrow: true,
      });
      // Either absent (no registry here) or the real thing; never an image of ours under that name.
      if (labels.code === 0) assert.is(labels.stdout.trim(), '<no value>', `${official} is one of our builds`);
    }
  });

  build.run();
}

// ---------------------------------------------------------------------------------------------
const pg = engineSuite<{ dir: string }>("the PostgreSQL 16 stand-in keeps the official image's contract");
if (pg) {
  setUp(pg, async (ctx) => {
    await ensureImages();
    ctx.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-image-'));
  });
  pg.after(async (ctx) => {
    if (ctx.dir) await fs.rm(ctx.dir, { recursive: true, force: true });
  });

  pg('its server and its client tools are PostgreSQL 16', async () => {
    assert.match((await runIn(STAND_INS.db, ['--version'], { entrypoint: 'postgres' })).stdout, /^postgres \(PostgreSQL\) 16\.\d+/);
    for (const tool of ['psql', 'pg_isready', 'pg_dump', 'pg_dumpall', 'pg_restore']) {
      assert.match(
        (await runIn(STAND_INS.db, ['--version'], { entrypoint: tool })).stdout,
        new RegExp(`^${tool} \\(PostgreSQL\\) 16\\.`),
        tool,
      );
    }
  });

  pg('stops with SIGINT, keeps its data in a volume, and starts through docker-entrypoint.sh postgres', async () => {
    const c = (await inspect(STAND_INS.db)).Config;
    assert.is(c.StopSignal, 'SIGINT');
    assert.ok(c.Volumes && '/var/lib/postgresql/data' in c.Volumes);
    assert.equal(c.Entrypoint, ['docker-entrypoint.sh']);
    assert.equal(c.Cmd, ['postgres']);
    assert.ok(c.Env.includes('PGDATA=/var/lib/postgresql/data'));
  });

  pg("sets listen_addresses = '*' in the sample configuration, and postgres is uid/gid 70", async () => {
    const r = await runIn(
      STAND_INS.db,
      ['-c', "grep -E '^listen_addresses' /usr/local/share/postgresql/postgresql.conf.sample; id -u postgres; id -g postgres"],
      { entrypoint: 'sh' },
    );
    assert.match(r.stdout, /^listen_addresses = '\*'\n70\n70\n$/);
  });

  pg(
    'initialises from _FILE secrets, creates POSTGRES_DB, runs the init scripts on a socket-only server, then serves as postgres',
    async (ctx) => {
      const secrets = path.join(ctx.dir, 'secrets');
      const init = path.join(ctx.dir, 'init');
      await fs.mkdir(secrets);
      await fs.mkdir(init);
      const password = `pw-${randomBytes(8).toString('hex')}`;
      await fs.writeFile(path.join(secrets, 'user'), 'boss', { mode: 0o600 });
      await fs.writeFile(path.join(secrets, 'password'), password, { mode: 0o600 });
      await fs.writeFile(path.join(secrets, 'db'), 'shop', { mode: 0o600 });
      // During init no TCP listener may exist, and the script runs as postgres.
      await fs.writeFile(
        path.join(init, '10-check.sh'),
        'if pg_isready -q -h 127.0.0.1; then echo "init-tcp=open"; else echo "init-tcp=closed"; fi\necho "init-uid=$(id -u)"\n',
      );
      await fs.writeFile(path.join(init, '20-table.sql'), 'CREATE TABLE made_by_init (id int);\n');
      const volume = `pgdeploy-image-test-${randomBytes(4).toString('hex')}`;
      const name = `pgdeploy-image-test-${randomBytes(4).toString('hex')}`;
      try {
        await docker([
          'run',
          '--detach',
          '--name',
          name,
          '--volume',
          `${volume}:/var/lib/postgresql/data`,
          '--volume',
          `${secrets}:/run/secrets:ro`,
          '--volume',
          `${init}:/docker-entrypoint-initdb.d:ro`,
          '--env',
          'POSTGRES_USER_FILE=/run/secrets/user',
          '--env',
          'POSTGRES_PASSWORD_FILE=/run/secrets/password',
          '--env',
          'POSTGRES_DB_FILE=/run/secrets/db',
          STAND_INS.db,
        ]);
        const sql = async (q: string) =>
          docker(
            [
              'exec',
              '--env',
              'PGUSER=boss',
              '--env',
              'PGDATABASE=shop',
              name,
              'sh',
              '-c',
              `PGPASSWORD="$(cat /run/secrets/password)" psql -X -A -t -c "${q}"`,
            ],
            { nothrow: true },
          );
        let up = false;
        for (let i = 0; i < 300 && !up; i++) {
          up = (await sql('SELECT 1')).stdout.trim() === '1' && /ready for start up/.test((await docker(['logs', name])).stdout);
          if (!up) await new Promise((r) => setTimeout(r, 200));
        }
        assert.ok(up, (await docker(['logs', name], { nothrow: true })).stderr);
        const logs = await docker(['logs', name]);
        assert.match(logs.stdout + logs.stderr, /init-tcp=closed/);
        assert.match(logs.stdout + logs.stderr, /init-uid=70/);
        assert.is((await sql("SELECT to_regclass('made_by_init') IS NOT NULL")).stdout.trim(), 't');
        assert.is((await sql('SELECT rolsuper FROM pg_roles WHERE rolname = current_user')).stdout.trim(), 't');
        // The server runs as postgres, with its socket where the official image has it.
        assert.is((await docker(['exec', name, 'stat', '-c', '%u:%g', '/proc/1'])).stdout.trim(), '70:70');
        await docker(['exec', name, 'test', '-S', '/var/run/postgresql/.s.PGSQL.5432']);
        // The temporary password file of initdb is gone, and so are the _FILE variables and the password.
        const env = (await docker(['exec', '--user', 'postgres', name, 'sh', '-c', 'tr "\\0" "\\n" </proc/1/environ'])).stdout;
        assert.not.match(env, /POSTGRES_PASSWORD/);
        assert.not.ok(env.includes(password));

        // Initialised once: a changed password file changes nothing after a restart.
        await fs.writeFile(path.join(secrets, 'password'), 'another-password');
        await docker(['restart', name]);
        let old = await runPsqlWith(name, password);
        for (let i = 0; i < 300 && old.code !== 0; i++) {
          await new Promise((r) => setTimeout(r, 200));
          old = await runPsqlWith(name, password);
        }
        assert.is(old.stdout.trim(), '1', old.stderr);
        const changed = await runPsqlWith(name, 'another-password');
        assert.is.not(changed.code, 0);
        assert.match(changed.stderr, /password authentication failed/);
      } finally {
        await docker(['rm', '--force', '--volumes', name], { nothrow: true });
        await docker(['volume', 'rm', volume], { nothrow: true });
      }
    },
  );

  pg('refuses POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE together, and an empty data directory without a password', async () => {
    const both = await runIn(STAND_INS.db, [], { env: { POSTGRES_PASSWORD: 'x', POSTGRES_PASSWORD_FILE: '/etc/hostname' }, nothrow: true });
    assert.is.not(both.code, 0);
    assert.match(both.stderr, /both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set/);
    const none = await runIn(STAND_INS.db, [], { nothrow: true });
    assert.is.not(none.code, 0);
    assert.match(none.stderr, /no superuser password is set/);
  });

  pg.run();
}

/** psql over the container's socket with `password` in the environment (its value never in argv). */
async function runPsqlWith(name: string, password: string) {
  return run(
    'docker',
    ['exec', '--env', 'PGUSER=boss', '--env', 'PGDATABASE=shop', '--env', 'PGPASSWORD', name, 'psql', '-X', '-A', '-t', '-c', 'SELECT 1'],
    { PGPASSWORD: password },
  );
}

// ---------------------------------------------------------------------------------------------
const others = engineSuite('the migrate and node stand-ins');
if (others) {
  setUp(others, async () => ensureImages());

  others('migrate is golang-migrate v4.18.3 with busybox sh, as migrate/migrate has', async () => {
    const v = await runIn(STAND_INS.migrate, ['-version']);
    assert.is((v.stdout + v.stderr).trim(), 'v4.18.3');
    const sh = await runIn(STAND_INS.migrate, ['-c', 'busybox | head -1'], { entrypoint: 'sh' });
    assert.match(sh.stdout, /^BusyBox v1\./);
    assert.equal((await inspect(STAND_INS.migrate)).Config.Entrypoint, ['migrate']);
  });

  others('node is Node 20 with an unprivileged node user (uid 1000), as node:20-alpine has', async () => {
    const v = await runIn(STAND_INS.node, ['node', '-e', 'process.stdout.write(process.version)']);
    assert.match(v.stdout, /^v20\./);
    const id = await runIn(STAND_INS.node, ['sh', '-c', 'id -u node; id -g node']);
    assert.is(id.stdout, '1000\n1000\n');
  });

  others.run();
}

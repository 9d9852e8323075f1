import * as assert from 'uvu/assert';
import path from 'node:path';
import { freePort, readSecretFile } from './setup/project.ts';
import {
  compose,
  composeVars,
  docker,
  engineSuite,
  makeDockerProject,
  ok,
  removeDockerProject,
  COMPOSE_FILE,
  type DockerProject,
} from './setup/docker.ts';
import { watch, type Watched } from './setup/processes.ts';
import { setUp } from './setup/hooks.ts';

// Where a password could surface on a real engine, and does not: the argv of every process on the
// host (the containers' processes included: they are the host's processes too) while the tasks run,
// the tasks' output, `docker inspect` of every container of the project, `docker compose config`
// and `docker compose logs` of every service. The passwords are those db:secrets generates.

interface Ctx {
  p?: DockerProject;
  /** Every password, raw and percent-encoded. */
  secrets?: string[];
  /** Each watched command, by a label, with what the sampler saw while it ran. */
  runs?: Record<string, Watched>;
}

const leaks = engineSuite<Ctx>('no password in docker inspect, compose config, container logs or any host argv (real engine)');

/** Between samples: one CPU of two is not ours to spin on; dozens of samples a second remain. */
const PAUSE_MS = 10;

if (leaks) {
  setUp(leaks, async (c) => {
    c.p = await makeDockerProject();
    const p = c.p;
    await ok(['db:secrets'], p.env); // first, so the sampler knows what to look for
    c.secrets = [];
    for (const n of ['postgres_password', 'migrate_password', 'app_password']) {
      const v = await readSecretFile(p, n);
      c.secrets.push(v, encodeURIComponent(v));
    }
    p.env.ENV_API_PORT = String(await freePort());
    const cliRun = (args: string[]) => watch(process.execPath, ['dist/cli.js', ...args], p.env, c.secrets!, { pauseMs: PAUSE_MS });
    c.runs = {};
    c.runs.deploy = await watch('pnpm', ['run', 'deploy'], p.env, c.secrets, { pauseMs: PAUSE_MS });
    c.runs['db:migrate down 1'] = await cliRun(['db:migrate', '--yes', 'down', '1']);
    c.runs['db:migrate'] = await cliRun(['db:migrate']);
    c.runs['db:status'] = await cliRun(['db:status']);
    c.runs['db:psql'] = await cliRun(['db:psql', '--', '-A', '-t', '-c', 'SELECT current_user']);
    // libpq's psql from the host, the password in PGPASSWORD; a second's sleep keeps it in the samples.
    c.runs.psql = await watch(
      'psql',
      ['-X', '-A', '-t', '-c', 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()', '-c', 'SELECT pg_sleep(1)'],
      {
        PGHOST: 'localhost',
        PGPORT: String(p.port),
        PGUSER: await readSecretFile(p, 'app_user'),
        PGPASSWORD: await readSecretFile(p, 'app_password'),
        PGDATABASE: await readSecretFile(p, 'postgres_db'),
        PGSSLMODE: 'verify-full',
        PGSSLROOTCERT: path.join(p.sslDir, 'ca.crt'),
        PGCONNECT_TIMEOUT: '10',
      },
      c.secrets,
      { pauseMs: PAUSE_MS },
    );
    // The app profile too, so api and a db-migrate service container are there to inspect and read.
    c.runs['compose --profile app up'] = await watch(
      'docker',
      ['compose', '-f', COMPOSE_FILE, '--profile', 'app', 'up', '--detach', '--wait', '--wait-timeout', '180'],
      composeVars(p),
      c.secrets,
      { pauseMs: PAUSE_MS },
    );
  });

  leaks.after(async (c) => {
    await removeDockerProject(c.p);
  });

  leaks(
    'deploy, migrate down and up, status, db:psql, psql and the app profile exit 0 while no host process argument holds a password',
    async ({ runs }) => {
      for (const [label, r] of Object.entries(runs!)) {
        assert.is(r.code, 0, `${label}: ${r.output}`);
        assert.ok(r.samples > 3, `${label}: the sampler sampled while it ran`);
        assert.equal(r.hits, [], label);
      }
      // The sampler saw the processes that matter: docker compose starting api-db and running db-migrate.
      const seen = (label: string, re: RegExp) =>
        assert.ok(
          [...runs![label].seen].some((l) => re.test(l)),
          `${label}: ${re} seen`,
        );
      seen('deploy', /docker compose -f \S+docker-compose\.yml up .*api-db/);
      seen('db:migrate', /docker compose -f \S+docker-compose\.yml run --rm --no-deps db-migrate up/);
      seen('db:psql', /docker compose -f \S+docker-compose\.yml exec (--no-TTY )?api-db \/usr\/local\/bin\/db-psql/);
      seen('psql', /psql -X -A -t -c SELECT ssl/);
    },
  );

  leaks('the tasks did their work and their output holds no password', async ({ runs, secrets }) => {
    assert.match(runs!.deploy.output, /1\/u create_accounts/);
    assert.match(runs!['db:migrate down 1'].output, /1\/d create_accounts/);
    assert.match(runs!['db:migrate'].output, /1\/u create_accounts/);
    assert.match(runs!['db:status'].output, /version\s+1\n/);
    assert.match(runs!['db:psql'].output, /^app$/m);
    assert.is(runs!.psql.output.trim().split('\n')[0], 't');
    for (const [label, r] of Object.entries(runs!))
      for (const s of secrets!) assert.not.ok(r.output.includes(s), `${label}: a password in its output`);
  });

  leaks(
    'docker inspect of every container of the project holds no password, in Env, Cmd, Args, Path, Labels or anywhere else',
    async ({ p, secrets }) => {
      const ids = (await docker(['ps', '--all', '--quiet', '--filter', `label=com.docker.compose.project=${p!.name}`])).stdout
        .trim()
        .split('\n')
        .filter(Boolean);
      const all = JSON.parse((await docker(['inspect', ...ids])).stdout) as {
        Path: string;
        Args: string[];
        Config: { Env: string[]; Cmd: string[] | null; Labels: Record<string, string> };
      }[];
      const services = all.map((c) => c.Config.Labels['com.docker.compose.service']).sort();
      assert.equal(services, ['api', 'api-db', 'db-migrate']);
      const db = all.find((c) => c.Config.Labels['com.docker.compose.service'] === 'api-db')!;
      assert.ok(
        db.Config.Env.includes('POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password'),
        'api-db is told where the password is, not what it is',
      );
      for (const c of all) {
        const name = c.Config.Labels['com.docker.compose.service'];
        const fields = { Env: c.Config.Env, Cmd: c.Config.Cmd, Args: c.Args, Path: c.Path, Labels: c.Config.Labels };
        for (const [field, value] of Object.entries(fields)) {
          for (const s of secrets!) assert.not.ok(JSON.stringify(value).includes(s), `${name}: a password in ${field}`);
        }
        for (const s of secrets!) assert.not.ok(JSON.stringify(c).includes(s), `${name}: a password in docker inspect`);
      }
    },
  );

  leaks("docker compose config holds no password, only the secret files' paths", async ({ p, secrets }) => {
    for (const args of [
      ['--profile', 'app', 'config'],
      ['--profile', 'app', 'config', '--format', 'json'],
    ]) {
      const r = await compose(p!, args);
      assert.is(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes(path.join(p!.secretsDir, 'app_password')), `${args.join(' ')}: names the file`);
      for (const s of secrets!) assert.not.ok(r.stdout.includes(s) || r.stderr.includes(s), `${args.join(' ')}: a password`);
    }
  });

  leaks('docker compose logs of every service hold no password', async ({ p, secrets }) => {
    const r = await compose(p!, ['--profile', 'app', 'logs', '--no-color', '--timestamps']);
    assert.is(r.code, 0, r.stderr);
    const logs = r.stdout + r.stderr;
    assert.match(logs, /api-db-1\s+\|.*database system is ready to accept connections/);
    assert.match(logs, /db-migrate-1\s+\|.*no change/);
    assert.match(logs, /api-1\s+\|.*api: listening/);
    for (const s of secrets!) assert.not.ok(logs.includes(s), 'a password in the logs');
  });

  leaks.run();
}

import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Config } from '../config.ts';
import type { Ctx } from '../context.ts';
import { UsageError, UserError } from '../errors.ts';
import { readSecrets } from '../secrets.ts';
import type { Roles } from '../roles.ts';
import { tlsFiles } from '../tls.ts';
import type { Target } from '../pg.ts';
import { waitFor } from '../wait.ts';
import { LOOPBACK, type LoginName, type Runtime } from './runtime.ts';
import { driftError, provision, tryLogin, verifyLogins, type Admin } from '../provision.ts';
import { containerDirArgs, containerToolArgs, hostRedirect, packDir, unpackDir, type PgTool, type PgToolIo } from './tools.ts';
import type { RunResult } from '../exec.ts';
import { lastLine } from '../errors.ts';
import { loadMigrations } from '../migrations/files.ts';
import { migrateArgs } from '../migrations/command.ts';

export const DB_SERVICE = 'api-db';
export const MIGRATE_SERVICE = 'db-migrate';

/**
 * The `docker` argument arrays, as data: one function per thing we ask Compose to do. Services are
 * addressed through Compose, never by container name, so the project name can change freely.
 */
export const compose = {
  base: (file: string) => ['compose', '-f', file],
  up: (file: string, timeoutS: number) => [...compose.base(file), 'up', '--detach', '--wait', '--wait-timeout', String(timeoutS), DB_SERVICE],
  // The whole project, the `app` profile's api included: it cannot work without its database, and a
  // profile Compose is not told about is left running (with the project's network).
  down: (file: string) => [...compose.base(file), '--profile', 'app', 'down'],
  destroy: (file: string) => [...compose.base(file), '--profile', 'app', 'down', '--volumes', '--remove-orphans'],
  ps: (file: string) => [...compose.base(file), 'ps', '--status', 'running', '--quiet', DB_SERVICE],
  logs: (file: string, follow: boolean) => [...compose.base(file), 'logs', ...(follow ? ['--follow'] : []), '--tail', '100', DB_SERVICE],
  // Without a terminal on stdin (a pipe, `< file.sql`), no TTY: Compose would want one whenever stdout is a terminal.
  shell: (file: string, args: readonly string[] = [], stdinIsTty = true) => [...compose.base(file), 'exec', ...(stdinIsTty ? [] : ['--no-TTY']), DB_SERVICE, 'bash', ...args],
  // psql.sh inside the container reads the secrets itself, so none passes through our argv.
  psql: (file: string, args: readonly string[], stdinIsTty = true) => [...compose.base(file), 'exec', ...(stdinIsTty ? [] : ['--no-TTY']), DB_SERVICE, '/usr/local/bin/db-psql', ...args],
  // admin-sql.sh reads the superuser secret inside the container and runs stdin on the socket.
  adminSql: (file: string, database: string) => [...compose.base(file), 'exec', '--no-TTY', DB_SERVICE, '/usr/local/bin/db-admin-sql', database],
  // start.sh installs the key inside the container; run again, it installs a renewed one.
  installTls: (file: string) => [...compose.base(file), 'exec', '--no-TTY', DB_SERVICE, '/usr/local/bin/db-start', '--install-tls-only'],
  appRunning: (file: string) => [...compose.base(file), 'ps', '--status', 'running', '--quiet', 'api'],
  // A file secret is a bind mount resolved when the container is made: recreate it to read the new file.
  recreateApp: (file: string) => [...compose.base(file), 'up', '--detach', '--no-deps', '--force-recreate', 'api'],
  migrate: (file: string, args: readonly string[]) => [...compose.base(file), 'run', '--rm', '--no-deps', MIGRATE_SERVICE, ...args],
  // The health state and the healthcheck's recent outputs, for the message when `up --wait` gives up.
  health: (containerId: string) => ['inspect', '--format', '{{json .State.Health}}', containerId],
};

/** The volume of infra/docker-compose.yml that holds the database (api-db's data directory). */
export const DATA_VOLUME = 'pg_data';

/** The `docker` argument arrays that are not Compose commands, as data like `compose`'s. */
export const engine = {
  composeVersion: () => ['compose', 'version', '--short'],
  /** For `docker-compose`, the program: v1, or a v2 the docker CLI does not find as its plugin. */
  standaloneComposeVersion: () => ['version', '--short'],
  serverVersion: () => ['info', '--format', '{{.ServerVersion}}'],
  // Compose labels every volume it creates with its project and its key in the file: this finds the
  // project's data volume whatever name Compose gave it, and no other project's.
  dataVolume: (project: string) => [
    'volume', 'ls', '--quiet',
    '--filter', `label=com.docker.compose.project=${project}`,
    '--filter', `label=com.docker.compose.volume=${DATA_VOLUME}`,
  ],
};

/**
 * What infra/docker-compose.yml interpolates: the host port and the state folders, as absolute paths
 * (Compose resolves relative ones against infra/, the tool against the project root). Passed on every
 * compose call, so the containers use the same secrets, certificates and migrations as the host side.
 */
export function composeEnv(cfg: Pick<Config, 'port' | 'secretsDir' | 'sslDir' | 'migrationsDir' | 'composeProject' | 'images'>): Record<string, string> {
  return {
    COMPOSE_PROJECT_NAME: cfg.composeProject,
    ENV_DB_PORT: String(cfg.port),
    DB_SECRETS_DIR: cfg.secretsDir,
    DB_SSL_DIR: cfg.sslDir,
    DB_MIGRATIONS_DIR: cfg.migrationsDir,
    DB_IMAGE: cfg.images.db,
    MIGRATE_IMAGE: cfg.images.migrate,
    NODE_IMAGE: cfg.images.node,
  };
}

/**
 * The oldest versions infra/docker-compose.yml and our calls work with. Engine 25 (API 1.44) is the
 * first to run a healthcheck's start_interval, which makes api-db healthy within about a second of
 * the server being ready; Compose 2.20.2 is the first to pass start_interval on (../shared/docs/facts.md),
 * and 2.17 introduced `up --wait-timeout`, which db:up sends.
 */
export const MIN_ENGINE = [25, 0] as const;
export const MIN_COMPOSE = [2, 20, 2] as const;

/** The leading numbers of a version: `26.1.5+dfsg1` is [26, 1, 5], `v2.29.0` is [2, 29, 0]; none: undefined. */
export function versionOf(s: string): number[] | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(s.trim());
  return m ? m.slice(1).map((x) => Number(x ?? 0)) : undefined;
}

function older(have: readonly number[], want: readonly number[]): boolean {
  for (let i = 0; i < want.length; i++) if ((have[i] ?? 0) !== want[i]) return (have[i] ?? 0) < want[i];
  return false;
}

type Availability = { ok: true } | { ok: false; why: string; hint: string };

/** Says in one line what is missing or too old when Compose v2 or the engine cannot run this project. */
export async function dockerAvailable(ctx: Pick<Ctx, 'exec'>): Promise<Availability> {
  const ask = (prog: string, args: string[]) => ctx.exec(prog, args, { nothrow: true, timeoutMs: 10_000 }).catch(() => ({ code: 127, stdout: '', stderr: '' }));
  // Both asked at once: every task on docker pays for these two processes (about 50 ms each).
  const [v2, info] = await Promise.all([ask('docker', engine.composeVersion()), ask('docker', engine.serverVersion())]);
  if (v2.code !== 0) {
    const standalone = await ask('docker-compose', engine.standaloneComposeVersion());
    if (standalone.code !== 0) {
      return { ok: false, why: 'Docker Compose v2 is not installed (docker compose version failed)', hint: 'install Docker Engine with the compose plugin, or set DB_RUNTIME=native' };
    }
    // Distributions also ship Compose v2 as a docker-compose program; the docker CLI runs it only from a plugin folder.
    if ((versionOf(standalone.stdout)?.[0] ?? 1) >= 2) {
      return {
        ok: false,
        why: `Compose v2 is installed as docker-compose (${standalone.stdout.trim()}), but docker compose does not find it: it is not a docker CLI plugin`,
        hint: 'link it where the docker CLI looks for plugins: mkdir -p ~/.docker/cli-plugins && ln -s "$(command -v docker-compose)" ~/.docker/cli-plugins/docker-compose; or set DB_RUNTIME=native',
      };
    }
    return { ok: false, why: 'only Compose v1 (docker-compose) is installed; this tool needs Compose v2 (docker compose)', hint: 'install the docker-compose-plugin package, or set DB_RUNTIME=native' };
  }
  if (info.code !== 0 || !info.stdout.trim()) {
    return { ok: false, why: 'no Docker engine answers (docker info failed)', hint: 'start Docker (systemctl start docker), or set DB_RUNTIME=native to use the embedded PostgreSQL' };
  }
  // A version that does not start with numbers (a development build) is not refused: it cannot be compared.
  const server = info.stdout.trim();
  const sv = versionOf(server);
  if (sv && older(sv, MIN_ENGINE)) {
    return { ok: false, why: `Docker Engine ${server} is too old: this tool needs ${MIN_ENGINE[0]} or newer, for the healthcheck's start_interval`, hint: 'upgrade Docker Engine (https://docs.docker.com/engine/install/), or set DB_RUNTIME=native' };
  }
  const composeV = v2.stdout.trim();
  const cv = versionOf(composeV);
  if (cv && older(cv, MIN_COMPOSE)) {
    return { ok: false, why: `Docker Compose ${composeV} is too old: this tool needs ${MIN_COMPOSE.join('.')} or newer, for the healthcheck's start_interval`, hint: 'upgrade the compose plugin (docker-compose-plugin), or set DB_RUNTIME=native' };
  }
  return { ok: true };
}

export function dockerRuntime(ctx: Ctx): Runtime {
  const { cfg, exec, log } = ctx;
  const file = cfg.composeFile;
  const env = composeEnv(cfg);
  const docker = (args: string[], interactive = false) => exec('docker', args, { cwd: cfg.root, env, interactive, nothrow: interactive });
  // Read once, as the native runtime does; a rotation builds a new runtime to see new files.
  let roles: Roles | undefined;
  const secrets = async () => (roles ??= await readSecrets(ctx));
  const target = async (login: LoginName = 'app'): Promise<Target> => {
    const s = await secrets();
    const ca = await ctx.fs.readFile(tlsFiles(cfg.sslDir).caCrt, 'utf8');
    return { host: LOOPBACK, port: cfg.port, ...s[login], database: s.database, ca };
  };
  // The superuser inside the container, on its socket: SQL goes in on stdin, never in argv.
  const admin = async (): Promise<Admin> => ({
    async query(sql, database = 'postgres') {
      const r = await exec('docker', compose.adminSql(file, database), { cwd: cfg.root, env, input: sql, nothrow: true });
      if (r.code !== 0) throw new UserError(`SQL as the superuser in ${DB_SERVICE} failed: ${lastLine(r.stderr)}`, 'see: pnpm db:logs');
      return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\x1f'));
    },
  });
  const running = async () => (await exec('docker', compose.ps(file), { cwd: cfg.root, env, nothrow: true })).stdout.trim() !== '';
  /** The last non-empty output of api-db's healthcheck, on one line ('' when there is none to read). */
  const lastHealthOutput = async (): Promise<string> => {
    const id = (await exec('docker', compose.ps(file), { cwd: cfg.root, env, nothrow: true })).stdout.trim().split('\n')[0];
    if (!id) return '';
    const r = await exec('docker', compose.health(id), { cwd: cfg.root, env, nothrow: true });
    try {
      const log = ((JSON.parse(r.stdout) ?? {}) as { Log?: { Output?: string }[] }).Log ?? [];
      return log.map((l) => (l.Output ?? '').trim().replace(/\s*\n\s*/g, ' ')).filter(Boolean).pop() ?? '';
    } catch {
      return ''; // no JSON: no healthcheck state to quote
    }
  };
  // The host shell only redirects, so the exit status is the container's.
  const viaHostFile = (dockerArgs: string[], io: PgToolIo) => {
    const r = hostRedirect(dockerArgs, io);
    return exec(r.cmd, r.args, { cwd: cfg.root, env, nothrow: true });
  };
  /** pg_dump -Fd in api-db: the container sends the directory as a tar once pg_dump succeeded; unpacked here, the tar removed. */
  async function dumpDir(tool: PgTool, args: readonly string[], dir: string): Promise<RunResult> {
    const tarFile = `${dir}.tar`;
    try {
      const r = await viaHostFile(containerDirArgs(compose.base(file), DB_SERVICE, 'dump', tool, args), { out: tarFile });
      if (r.code === 0) await unpackDir(ctx, tarFile, dir);
      return r;
    } finally {
      await ctx.fs.rm(tarFile, { force: true });
    }
  }
  /**
   * pg_restore of a directory in api-db: the directory goes in as a tar on stdin. The tar is staged
   * under a hidden name in DB_BACKUP_DIR (private, and with room for a backup), never in the backup itself.
   */
  async function restoreDir(tool: PgTool, args: readonly string[], dir: string): Promise<RunResult> {
    await ctx.fs.mkdir(cfg.backupDir, { recursive: true, mode: 0o700 });
    const tarFile = path.join(cfg.backupDir, `.restore-${process.pid}-${randomBytes(3).toString('hex')}.tar`);
    try {
      await packDir(ctx, dir, tarFile);
      return await viaHostFile(containerDirArgs(compose.base(file), DB_SERVICE, 'restore', tool, args), { in: tarFile });
    } finally {
      await ctx.fs.rm(tarFile, { force: true });
    }
  }
  return {
    label: 'docker',
    target,
    admin,
    running,
    async reloadTls() {
      await docker(compose.installTls(file));
      await (await admin()).query('SELECT pg_reload_conf()');
    },
    async restartApp() {
      if (!(await exec('docker', compose.appRunning(file), { cwd: cfg.root, env, nothrow: true })).stdout.trim()) return false;
      await docker(compose.recreateApp(file));
      return true;
    },
    describeData: () => `the Compose volumes of ${path.relative(cfg.root, file)} (all database data)`,
    prepareTools: async () => {}, // the container's tools always match its server
    async pgTool(tool, args, io = {}) {
      if (io.outDir) return dumpDir(tool, args, io.outDir);
      if (io.inDir) return restoreDir(tool, args, io.inDir);
      return viaHostFile(containerToolArgs(compose.base(file), DB_SERVICE, tool, args), io);
    },
    async up() {
      const t = await target();
      log.step(`starting ${DB_SERVICE} with Docker Compose (127.0.0.1:${cfg.port})`);
      const timeoutS = Math.ceil(cfg.upTimeoutMs / 1000);
      const r = await exec('docker', compose.up(file, timeoutS), { cwd: cfg.root, env, nothrow: true });
      if (r.code !== 0) {
        const taken = /address already in use|port is already allocated/i.test(r.stderr);
        // Compose says `container <project>-api-db-1 is unhealthy`, or `application not healthy
        // after 15s` once --wait-timeout passes while the check still fails (health: starting).
        if (!taken && /is unhealthy|not healthy after/i.test(r.stderr)) {
          const said = await lastHealthOutput();
          throw new UserError(
            `${DB_SERVICE} is unhealthy${/not healthy after/i.test(r.stderr) ? ` after ${timeoutS}s (DB_UP_TIMEOUT)` : ''}${said ? `; its healthcheck says: ${said}` : ''}`,
            'see why in the server log: pnpm db:logs',
          );
        }
        // The image is not on this engine and the registry cannot give it (no network, a private
        // registry without a login, a wrong name): the server log has nothing to say about that.
        if (!taken && /registry|pull access denied|manifest unknown|not found: manifest|no such host/i.test(r.stderr)) {
          throw new UserError(
            `could not get the image ${cfg.images.db}: ${lastLine(r.stderr)}`,
            'check the network or the registry login (docker login), or set DB_IMAGE to an image this engine has; where no registry is reachable: pnpm images:build, with the lines of pnpm -s images:build --print-env in .env.local, or DB_RUNTIME=native',
          );
        }
        throw new UserError(
          taken ? `port ${cfg.port} on 127.0.0.1 is taken by another process` : `docker compose up failed: ${lastLine(r.stderr)}`,
          taken ? 'stop that process, or set ENV_DB_PORT to a free port in .env.local' : 'see: pnpm db:logs',
        );
      }
      // Healthy is the container's view. Then roles and grants (idempotent), then the promise:
      // a verified TLS login from the host as the application.
      const s = await secrets();
      await provision(await admin(), s, (l) => log.warn(l));
      let lastError = '';
      await waitFor(ctx, 'waiting for a TLS login', cfg.upTimeoutMs, async () => {
        try {
          await tryLogin(t);
          return true;
        } catch (e) {
          const drift = driftError(e, 'app', s.app.user);
          if (drift) throw drift;
          lastError = (e as Error).message;
          return false;
        }
      }, () => `the container is healthy but no TLS login succeeded within ${timeoutS}s (last error: ${lastError})`);
      await verifyLogins(ctx, s, undefined, await target('migrator')); // the app's login was the wait above
      return { initialised: false };
    },
    async down() {
      const was = await running();
      await docker(compose.down(file));
      return { wasRunning: was };
    },
    async logs(follow) {
      await docker(compose.logs(file, follow), true);
    },
    // `docker compose exec` exits with the command's status.
    async shell(args, io) {
      return (await docker(compose.shell(file, args, io.stdinIsTty), true)).code;
    },
    async psql(args, io) {
      return (await docker(compose.psql(file, args, io.stdinIsTty), true)).code;
    },
    async destroy() {
      await docker(compose.destroy(file));
    },
    async hasData() {
      const r = await exec('docker', engine.dataVolume(cfg.composeProject), { cwd: cfg.root, env, nothrow: true });
      // An engine that does not answer cannot say there is nothing: unknown counts as data.
      return r.code !== 0 || r.stdout.trim() !== '';
    },
    async migrate(cmd, opts = {}) {
      if (opts.singleTransaction) {
        // golang-migrate commits each file; it has no such mode, and docker migrations are its.
        throw new UsageError('--single-transaction needs the native runtime: golang-migrate, which migrates for docker, commits each file', 'run without --single-transaction');
      }
      // golang-migrate decides in its container what to run, so every file's text is checked for it first.
      loadMigrations(cfg.migrationsDir, { texts: 'all' });
      const r = await docker(compose.migrate(file, migrateArgs(cmd)), true);
      if (r.code !== 0) throw new UserError(`the db-migrate service exited with ${r.code}`, 'read its message above; for a dirty database: pnpm db:status');
      return undefined;
    },
  };
}

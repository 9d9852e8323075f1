import path from 'node:path';
import type { Ctx } from '../context.ts';
import { CommandError, UserError } from '../errors.ts';
import { waitFor } from '../wait.ts';
import type { Runtime } from './runtime.ts';
import type { Admin } from '../provision.ts';
import type { PgToolIo } from './tools.ts';
import { adminRows, containerDirArgs, containerToolArgs, dumpDirVia, hostRedirect, restoreDirVia } from './container-tools.ts';
import { loadMigrations } from '../migrations/files.ts';
import { migrateArgs } from '../migrations/command.ts';
import { compose, composeEnv, DB_SERVICE, engine, refuseSingleTransaction } from './compose.ts';
import { loginTargets, provisionOverTls } from './target.ts';
import { dockerReplica } from './docker-replica.ts';
import { dockerPitr } from './docker-pitr.ts';

/** psql's words when the server runs but turns sessions away (starting, shutting down, in recovery without hot standby). */
const turnedAway = (e: unknown) =>
  e instanceof CommandError &&
  /the database system is (starting up|shutting down|not accepting connections|in recovery mode)/.test(e.stderr);

export function dockerRuntime(ctx: Ctx): Runtime {
  const { cfg, exec, log } = ctx;
  const file = cfg.composeFile;
  const env = composeEnv(cfg);
  const docker = (args: string[], interactive = false) => exec('docker', args, { cwd: cfg.root, env, interactive, nothrow: interactive });
  /** For probes and pgTool, whose exit code is the answer. */
  const ask = (cmd: string, args: string[]) => exec(cmd, args, { cwd: cfg.root, env, nothrow: true });
  const logins = loginTargets(ctx);
  const { target } = logins;
  // The superuser inside the container, on its socket: SQL goes in on stdin, never in argv.
  const admin = async (): Promise<Admin> => ({
    async query(sql, database = 'postgres') {
      const failure = { message: `SQL as the superuser in ${DB_SERVICE} failed`, hint: 'see: pnpm db:logs' };
      return adminRows((await exec('docker', compose.adminSql(file, database), { cwd: cfg.root, env, input: sql, failure })).stdout);
    },
  });
  const running = async () => (await ask('docker', compose.ps(file))).stdout.trim() !== '';
  const replica = dockerReplica(ctx, env, { running, admin });
  /** The last output of api-db's healthcheck, on one line ('' when there is none). */
  const lastHealthOutput = async (): Promise<string> => {
    const id = (await ask('docker', compose.ps(file))).stdout.trim().split('\n')[0];
    if (!id) return '';
    const r = await ask('docker', compose.health(id));
    try {
      const log = ((JSON.parse(r.stdout) ?? {}) as { Log?: { Output?: string }[] }).Log ?? [];
      return (
        log
          .map((l) => (l.Output ?? '').trim().replace(/\s*\n\s*/g, ' '))
          .filter(Boolean)
          .pop() ?? ''
      );
    } catch {
      return ''; // no JSON: no healthcheck state to quote
    }
  };
  /** What a failed `compose up` means, from what Compose said. */
  const upFailure = async (e: unknown, timeoutS: number): Promise<unknown> => {
    if (!(e instanceof CommandError)) return e;
    if (/address already in use|port is already allocated/i.test(e.stderr)) {
      return new UserError(
        `port ${cfg.port} on 127.0.0.1 is taken by another process`,
        'stop that process, or set ENV_DB_PORT to a free port in .env.local',
      );
    }
    // start.sh refuses a cluster db:promote fenced, and says so in the log.
    const fenced = (await ask('docker', compose.lastLogs(file, DB_SERVICE, 20))).stdout
      .split('\n')
      .map((l) => /db-start: (.* is fenced: .*?);/.exec(l)?.[1])
      .filter(Boolean)
      .pop();
    if (fenced) {
      // Deliberately stopped, or the restart policy would keep trying it.
      await ask('docker', compose.stop(file));
      return new UserError(
        `${DB_SERVICE}: ${fenced}`,
        'keep the promoted server, or rebuild the pair from it as the README says (Failover); never start this one as a primary',
      );
    }
    // `container ... is unhealthy`, or `application not healthy after 15s` once --wait-timeout passed.
    if (/is unhealthy|not healthy after/i.test(e.stderr)) {
      const said = await lastHealthOutput();
      return new UserError(
        `${DB_SERVICE} is unhealthy${/not healthy after/i.test(e.stderr) ? ` after ${timeoutS}s (DB_UP_TIMEOUT)` : ''}${said ? `; its healthcheck says: ${said}` : ''}`,
        'see why in the server log: pnpm db:logs',
      );
    }
    // The registry cannot give the image: the server log has nothing to say about that.
    if (/registry|pull access denied|manifest unknown|not found: manifest|no such host/i.test(e.stderr)) {
      return new CommandError(e.cmd, e.args, e.code, e.stderr, {
        message: `could not get the image ${cfg.images.db}`,
        hint:
          'check the network or the registry login (docker login), or set DB_IMAGE to an image this engine has; where no registry is reachable: ' +
          'pnpm images:build, with the lines of pnpm -s images:build --print-env in .env.local, or DB_RUNTIME=native',
      });
    }
    return e;
  };
  // The host shell only redirects, so the exit status is the container's.
  const viaHostFile = (dockerArgs: string[], io: PgToolIo) => {
    const r = hostRedirect(dockerArgs, io);
    return ask(r.cmd, r.args);
  };
  return {
    label: 'docker',
    replica,
    target,
    admin,
    running,
    pitr: dockerPitr(ctx, running),
    async reloadTls() {
      await docker(compose.installTls(file)); // start.sh installs the renewed key inside the container
      await (await admin()).query('SELECT pg_reload_conf()');
    },
    async restartApp() {
      if (!(await ask('docker', compose.appRunning(file))).stdout.trim()) return false;
      await docker(compose.recreateApp(file));
      return true;
    },
    describeData: () => `the Compose volumes of ${path.relative(cfg.root, file)} (all database data)`,
    prepareTools: async () => {}, // the container's tools always match its server
    async pgTool(tool, args, io = {}) {
      if (io.outDir) return dumpDirVia(ctx, viaHostFile, containerDirArgs(compose.base(file), DB_SERVICE, 'dump', tool, args), io.outDir);
      if (io.inDir)
        return restoreDirVia(ctx, viaHostFile, containerDirArgs(compose.base(file), DB_SERVICE, 'restore', tool, args), io.inDir);
      return viaHostFile(containerToolArgs(compose.base(file), DB_SERVICE, tool, args), io);
    },
    async up() {
      await target(); // the secrets and the CA read first: a missing file fails before anything starts
      log.step(`starting ${DB_SERVICE} with Docker Compose (127.0.0.1:${cfg.port})`);
      const timeoutS = Math.ceil(cfg.upTimeoutMs / 1000);
      const failure = { message: 'docker compose up failed', hint: 'see: pnpm db:logs' };
      await exec('docker', compose.up(file, timeoutS), { cwd: cfg.root, env, failure }).catch(async (e: unknown) => {
        throw await upFailure(e, timeoutS);
      });
      // Healthy is the container's view; the host's proof is a verified TLS login through the published port.
      const startedAt = ctx.clock().getTime();
      const settled = () => provisionOverTls(ctx, logins, admin, 'the container');
      const { provisioned } = await settled().catch(async (e: unknown) => {
        // Compose saw a passing check, yet the server turns sessions away (restarting, or in recovery):
        // a health state from around a restart. Wait out DB_UP_TIMEOUT for it, as `up --wait` would have.
        if (!turnedAway(e)) throw e;
        let said = '';
        await waitFor(
          ctx,
          `waiting for ${DB_SERVICE} to accept connections`,
          Math.max(0, cfg.upTimeoutMs - (ctx.clock().getTime() - startedAt)),
          async () => {
            const ready = await (await admin()).query('SELECT 1').then(
              () => true,
              (err: unknown) => {
                if (!turnedAway(err)) throw err;
                return false;
              },
            );
            if (!ready) said = await lastHealthOutput();
            return ready;
          },
          () => `${DB_SERVICE} is unhealthy after ${timeoutS}s (DB_UP_TIMEOUT)${said ? `; its healthcheck says: ${said}` : ''}`,
          250,
        );
        return settled();
      });
      return { initialised: false, provisioned };
    },
    async down() {
      const was = await running();
      const standby = (await ask('docker', compose.replicaPs(file))).stdout.trim() !== '';
      await docker(compose.down(file));
      return { wasRunning: was || standby, ...(standby && { standby }) };
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
      const r = await ask('docker', engine.dataVolume(cfg.composeProject));
      return r.code !== 0 || r.stdout.trim() !== ''; // no answer counts as data
    },
    async migrate(cmd, opts = {}) {
      refuseSingleTransaction(opts);
      // golang-migrate decides in its container what runs: every file's text is checked first.
      loadMigrations(cfg.migrationsDir, { texts: 'all' });
      const r = await docker(compose.migrate(file, migrateArgs(cmd)), true);
      if (r.code !== 0)
        throw new UserError(`the db-migrate service exited with ${r.code}`, 'read its message above; for a dirty database: pnpm db:status');
      return undefined;
    },
  };
}

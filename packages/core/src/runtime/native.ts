import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Roles } from '../roles.ts';
import { driftError, socketAdmin, tryLogin, type Admin } from '../provision.ts';
import { settle } from '../provisioned.ts';
import { tlsFiles } from '../tls.ts';
import { withClient, type Target } from '../pg.ts';
import { waitFor } from '../wait.ts';
import { nativeToolRunner } from './tools.ts';
import { loadMigrations } from '../migrations/files.ts';
import { migrate as runMigrations } from '../migrations/runner.ts';
import type { LoginName, Runtime } from './runtime.ts';
import { nativeHome, nativePaths, type NativePaths } from './native-home.ts';
import { nativeServer } from './native-server.ts';
import { initdb, installTls, removeStartLeftovers } from './native-cluster.ts';
import { assertPortFree, takeLock } from './processes.ts';
import { loginTargets } from './target.ts';
import { nativeReplica } from './native-replica.ts';
import { nativePitr } from './native-pitr.ts';

export function nativeRuntime(ctx: Ctx): Runtime {
  const { cfg, exec, fs, log } = ctx;
  const home = nativeHome(ctx);
  const { p, sp } = home;
  const server = nativeServer(ctx, home);
  const logins = loginTargets(ctx);
  const secrets = logins.secrets;
  const target = async (login: LoginName = 'app'): Promise<Target> => {
    const t = await logins.target(login);
    await server.assertPort();
    return t;
  };
  const admin = async (): Promise<Admin> => {
    await server.assertPort();
    return socketAdmin(p.run, cfg.port, await secrets());
  };

  const tools = nativeToolRunner(ctx, p.run, secrets, admin);
  const replica = nativeReplica(ctx, home, {
    running: server.running,
    stop: server.stop,
    admin,
    roles: secrets,
    clientBin: tools.clientBin,
  });

  /** db:up under the lock: folders, the cluster the first time, the certificate, the start, roles and grants, the promise. */
  async function upLocked(r: Roles, s: NativePaths): Promise<{ initialised: boolean; provisioned: boolean }> {
    const st = await server.state();
    if (!st.up && st.stale) await server.removeStalePid(st.stale);
    await server.assertPort();
    if (!st.up) await assertPortFree(cfg.port);
    for (const d of [s.run, s.tls]) {
      await fs.mkdir(d, { recursive: true, mode: 0o700 });
      await home.own(d);
    }
    if (!st.up) await removeStartLeftovers(ctx, home, s);
    let initialised = false;
    if (!(await server.hasData())) {
      log.step(`initialising a new PostgreSQL cluster in ${path.relative(cfg.root, p.data) || p.data}`);
      await initdb(ctx, home, r, s);
      initialised = true;
    }
    await installTls(ctx, home);
    const logFrom = (await fs.stat(p.log).catch(() => ({ size: 0 }))).size;
    const startedAt = ctx.clock().getTime();
    if (!st.up) {
      log.step(`starting PostgreSQL on 127.0.0.1:${cfg.port}`);
      await server.start(s);
    }
    // Ready: the superuser answers on the socket. Then roles and grants, then a verified TLS login.
    const su = await admin();
    let lastError = '';
    await waitFor(
      ctx,
      'waiting for PostgreSQL',
      cfg.upTimeoutMs,
      async () => {
        try {
          await su.query('SELECT 1');
          return true;
        } catch (e) {
          const drift = driftError(e, 'postgres', r.admin.user);
          if (drift) throw drift;
          lastError = e instanceof Error ? e.message : String(e);
          const failed = await server.failedToStart(logFrom, ctx.clock().getTime() - startedAt);
          if (failed) throw new UserError(`PostgreSQL failed to start: ${failed}`, `see ${p.log}`);
          return false;
        }
      },
      () => `PostgreSQL did not answer within ${cfg.upTimeoutMs / 1000}s (last error: ${lastError})`,
      10, // a local socket: a refused attempt costs little, and a restart is ready in tens of milliseconds
    );
    const { provisioned } = await settle(ctx, r, {
      admin: async () => su,
      app: await target('app'),
      migrator: await target('migrator'),
      appLogin: (t) =>
        tryLogin(t).catch((e: unknown) => {
          throw driftError(e, 'app', r.app.user) ?? e;
        }),
      say: (l) => ctx.log.warn(l),
    });
    return { initialised, provisioned };
  }

  return {
    label: 'native',
    target,
    admin,
    describeData: () => `the native data directory ${p.dir}`,
    ...tools,
    replica,
    pitr: nativePitr(ctx, home, server),
    running: server.running,
    hasData: server.hasData,
    async reloadTls() {
      await installTls(ctx, home);
      await home.serverConfig((await sp()).dir); // the reload rereads the configuration: copies stay current
      await (await admin()).query('SELECT pg_reload_conf()');
    },
    restartApp: async () => false, // no application runs under the native runtime
    async up() {
      const r = await secrets();
      const fenced = await replica.fenced();
      if (fenced) {
        throw new UserError(
          `${home.shown(p.data)} is fenced: ${fenced}`,
          'keep the promoted server, or rebuild the pair from it as the README says (Failover); never start this one as a primary',
        );
      }
      const dir = await home.serverDir();
      // One db:up at a time here: a second waits for the first, then finds the server up.
      const release = await takeLock(ctx, path.join(dir, 'up.lock'), 'another db:up', cfg.upTimeoutMs);
      try {
        return await upLocked(r, nativePaths(dir));
      } finally {
        await release();
      }
    },
    async down() {
      const st = await server.state();
      // The primary first: its fast shutdown sends the standby every last WAL record.
      if (st.up) await server.stop();
      else if (st.stale) await server.removeStalePid(st.stale);
      const standby = await replica.stop();
      return { wasRunning: st.up || standby, ...(standby && { standby }) };
    },
    async logs(follow) {
      await fs.stat(p.log).catch((e: NodeJS.ErrnoException) => {
        throw e.code === 'ENOENT' ? new UserError(`no server log yet at ${p.log}`, 'start the server first: pnpm db:up') : e;
      });
      await exec('tail', ['-n', '100', ...(follow ? ['-F'] : []), p.log], { interactive: true, nothrow: true }); // ended by Ctrl-C
    },
    // nothrow: their exit status is the task's, not an error of ours.
    async shell(args) {
      return (await exec(cfg.shell, [...args], { interactive: true, nothrow: true, env: await pgEnv(ctx, await target()) })).code;
    },
    async psql(args) {
      return (await exec('psql', [...args], { interactive: true, nothrow: true, env: await pgEnv(ctx, await target()) })).code;
    },
    async destroy() {
      if ((await server.state()).up) await server.stop();
      await replica.stop();
      // A link to the server's own folder: that folder goes too.
      const real = await fs.realpath(p.dir).catch(() => p.dir);
      if (real !== p.dir) await fs.rm(real, { recursive: true, force: true });
      await fs.rm(p.dir, { recursive: true, force: true });
    },
    async migrate(cmd, opts = {}) {
      // Only the names now: the runner reads the texts of the files it will run.
      const migrations = loadMigrations(cfg.migrationsDir, { texts: 'later' });
      const t = await target('migrator');
      return withClient({ ...t, applicationName: 'pg-deploy migrate' }, (c) =>
        runMigrations(ctx, c, migrations, cmd, { lockTimeoutMs: cfg.lockTimeoutMs, singleTransaction: opts.singleTransaction }),
      );
    },
  };
}

/** libpq's variables for a verified TLS session as the application; the password stays out of argv. */
export async function pgEnv(ctx: Pick<Ctx, 'cfg'>, t: Target): Promise<Record<string, string>> {
  return {
    PGHOST: t.host,
    PGPORT: String(t.port),
    PGUSER: t.user,
    PGDATABASE: t.database,
    PGPASSWORD: t.password,
    PGSSLMODE: 'verify-full',
    PGSSLROOTCERT: tlsFiles(ctx.cfg.sslDir).caCrt,
  };
}

import path from 'node:path';
import net from 'node:net';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { readSecrets } from '../secrets.ts';
import type { Roles } from '../roles.ts';
import { driftError, provision, socketAdmin, verifyLogins, type Admin } from '../provision.ts';
import { tlsFiles } from '../tls.ts';
import { serverBinDir } from '../pgbin.ts';
import { withClient, type Target } from '../pg.ts';
import { waitFor } from '../wait.ts';
import { nativeToolRunner } from './tools.ts';
import { loadMigrations } from '../migrations/files.ts';
import { migrate as runMigrations } from '../migrations/runner.ts';
import { LOOPBACK, type LoginName, type Runtime } from './runtime.ts';

/** Where the native server keeps its state, all under DB_NATIVE_DIR so checkouts never collide. */
export function nativePaths(dir: string) {
  return {
    dir,
    data: path.join(dir, 'data'),
    run: path.join(dir, 'run'),
    tls: path.join(dir, 'tls'),
    log: path.join(dir, 'postgres.log'),
  };
}

/** Single-quotes a value for the shell line pg_ctl builds from `-o`. */
function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Fails with the fix when something else already listens on the port. */
export async function assertPortFree(port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'EADDRINUSE'
          ? new UserError(`port ${port} on 127.0.0.1 is taken by another process`, `stop that process, or set ENV_DB_PORT to a free port in .env.local`)
          : e,
      ),
    );
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve()));
  });
}

export function nativeRuntime(ctx: Ctx): Runtime {
  const { cfg, exec, fs, log } = ctx;
  const p = nativePaths(cfg.nativeDir);
  const bin = (name: string) => path.join(serverBinDir(cfg.pgBinDir), name);
  let owner: { uid: number; gid: number } | undefined | null = null;

  /** PostgreSQL refuses to run as root: as root, the server runs as DB_NATIVE_USER. */
  async function serverUser() {
    if (owner !== null) return owner;
    if (process.getuid?.() !== 0) return (owner = undefined);
    // /etc/passwd first (no process to start); `id` for users it does not hold (LDAP and the like).
    const line = (await fs.readFile('/etc/passwd', 'utf8').catch(() => '')).split('\n').find((l) => l.startsWith(`${cfg.nativeUser}:`));
    const id = async (flag: string) => Number((await exec('id', [flag, cfg.nativeUser], { nothrow: true })).stdout.trim());
    const [uid, gid] = line ? line.split(':').slice(2, 4).map(Number) : [await id('-u'), await id('-g')];
    if (!uid) {
      throw new UserError(`running as root and there is no user "${cfg.nativeUser}" to run PostgreSQL as`, `create one (useradd --system ${cfg.nativeUser}) or set DB_NATIVE_USER to an unprivileged user`);
    }
    return (owner = { uid, gid });
  }

  async function own(file: string) {
    const u = await serverUser();
    if (u) await fs.chown(file, u.uid, u.gid);
  }

  async function pgCtl(args: string[], nothrow = false) {
    return exec(bin('pg_ctl'), ['-D', p.data, ...args], { asUser: await serverUser(), cwd: p.dir, nothrow });
  }

  /** The postmaster's pid file names a live process: what `pg_ctl status` checks, without a process start. */
  async function running(): Promise<boolean> {
    const pidLine = (await fs.readFile(path.join(p.data, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0];
    const pid = Number(pidLine);
    if (!Number.isInteger(pid) || pid <= 0) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM'; // alive, owned by another user
    }
  }

  async function initdb(r: Roles): Promise<void> {
    const u = await serverUser();
    // initdb reads the password from a file; it exists only for the length of this call, 0600, owned by the server user.
    const pwfile = path.join(p.dir, `.pw-${process.pid}`);
    await fs.writeFile(pwfile, r.admin.password, { mode: 0o600, flag: 'wx' });
    try {
      await own(pwfile);
      const res = await exec(bin('initdb'), ['-D', p.data, '-U', r.admin.user, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--no-locale'], { asUser: u, cwd: p.dir, nothrow: true });
      if (res.code !== 0) {
        await fs.rm(p.data, { recursive: true, force: true }); // never leave a half-initialised cluster behind
        const perm = /Permission denied/i.test(res.stderr);
        throw new UserError(
          `initdb failed: ${res.stderr.trim().split('\n').pop()}`,
          perm ? `the server user "${cfg.nativeUser}" must be able to reach ${p.dir}: make its parent directories searchable (chmod o+x) or set DB_NATIVE_DIR elsewhere` : `see the message above; the data directory was removed so the next db:up starts clean`,
        );
      }
    } finally {
      await fs.rm(pwfile, { force: true });
    }
  }

  /** Copies the certificate and key where the server user owns them: PostgreSQL insists on a 0600 key it owns. */
  async function installTls(): Promise<void> {
    const src = tlsFiles(cfg.sslDir);
    for (const [from, to, mode] of [[src.serverCrt, 'server.crt', 0o644], [src.serverKey, 'server.key', 0o600], [src.caCrt, 'ca.crt', 0o644]] as const) {
      const dest = path.join(p.tls, to);
      const tmp = `${dest}.tmp`;
      await fs.copyFile(from, tmp).catch(() => {
        throw new UserError(`${path.relative(cfg.root, from)} is missing`, 'create the certificates with: pnpm db:secure');
      });
      await fs.chmod(tmp, mode);
      await own(tmp);
      await fs.rename(tmp, dest);
    }
  }

  async function start(): Promise<void> {
    const opts = [
      ['config_file', path.join(cfg.configDir, 'postgresql.conf')],
      ['hba_file', path.join(cfg.configDir, 'pg_hba.conf')],
      ['ssl_cert_file', path.join(p.tls, 'server.crt')],
      ['ssl_key_file', path.join(p.tls, 'server.key')],
      // Only loopback: the native server is for this machine.
      ['listen_addresses', '127.0.0.1'],
      ['port', String(cfg.port)],
      ['unix_socket_directories', p.run],
    ].map(([k, v]) => `-c ${shq(`${k}=${v}`)}`).join(' ');
    await pgCtl(['start', '-W', '-l', p.log, '-o', opts]);
  }

  async function tailLog(lines = 5, from = 0): Promise<string> {
    const text = (await fs.readFile(p.log).catch(() => Buffer.alloc(0))).subarray(from).toString('utf8');
    return text.trim().split('\n').slice(-lines).join('\n');
  }

  /**
   * Whether a server we just started has failed. `pg_ctl start -W` returns before the postmaster
   * writes its pid file, so a missing pid file means "not yet", not "dead": only a FATAL/PANIC in
   * the log since our start, or no pid file after the grace period, is a failure.
   */
  async function failedToStart(logFrom: number, sinceMs: number): Promise<string | undefined> {
    if (await running()) return undefined;
    const log = await tailLog(20, logFrom);
    const fatal = log.split('\n').filter((l) => /\b(FATAL|PANIC)\b/.test(l));
    if (fatal.length) return fatal.slice(-2).join(' | ');
    if (sinceMs > 10_000) return log.split('\n').slice(-3).join(' | ') || 'no postmaster after 10s and nothing in the log';
    return undefined;
  }

  /** initdb writes PG_VERSION: a data directory without it holds no cluster. */
  const hasData = () => fs.stat(path.join(p.data, 'PG_VERSION')).then(() => true, () => false);

  let roles: Roles | undefined;
  const secrets = async () => (roles ??= await readSecrets(ctx));
  const target = async (login: LoginName = 'app'): Promise<Target> => {
    const r = await secrets();
    const ca = await fs.readFile(tlsFiles(cfg.sslDir).caCrt, 'utf8');
    return { host: LOOPBACK, port: cfg.port, ...r[login], database: r.database, ca };
  };
  const admin = async (): Promise<Admin> => socketAdmin(p.run, cfg.port, await secrets());

  return {
    label: 'native',
    target,
    admin,
    describeData: () => `the native data directory ${p.dir}`,
    ...nativeToolRunner(ctx, p.run, secrets, admin),
    running,
    hasData,
    async reloadTls() {
      await installTls();
      await (await admin()).query('SELECT pg_reload_conf()');
    },
    restartApp: async () => false, // no application runs under the native runtime
    async up() {
      const r = await secrets();
      const isUp = await running();
      if (!isUp) await assertPortFree(cfg.port);
      for (const d of [p.dir, p.run, p.tls]) {
        await fs.mkdir(d, { recursive: true, mode: 0o700 });
        await own(d);
      }
      let initialised = false;
      if (!(await hasData())) {
        log.step(`initialising a new PostgreSQL cluster in ${path.relative(cfg.root, p.data) || p.data}`);
        await initdb(r);
        initialised = true;
      }
      await installTls();
      const logFrom = (await fs.stat(p.log).catch(() => ({ size: 0 }))).size;
      const startedAt = ctx.clock().getTime();
      if (!isUp) {
        log.step(`starting PostgreSQL on 127.0.0.1:${cfg.port}`);
        await start();
      }
      // Ready means the superuser answers on the socket; then roles and grants; then the promise:
      // a verified TLS login as the application.
      const su = await admin();
      let lastError = '';
      await waitFor(ctx, 'waiting for PostgreSQL', cfg.upTimeoutMs, async () => {
        try {
          await su.query('SELECT 1');
          return true;
        } catch (e) {
          const drift = driftError(e, 'postgres', r.admin.user);
          if (drift) throw drift;
          lastError = (e as Error).message;
          const failed = await failedToStart(logFrom, ctx.clock().getTime() - startedAt);
          if (failed) throw new UserError(`PostgreSQL failed to start: ${failed}`, `see ${p.log}`);
          return false;
        }
      }, () => `PostgreSQL did not answer within ${cfg.upTimeoutMs / 1000}s (last error: ${lastError})`);
      await provision(su, r, (l) => ctx.log.warn(l));
      await verifyLogins(ctx, r, await target('app'), await target('migrator'));
      return { initialised };
    },
    async down() {
      if (!(await running())) return { wasRunning: false };
      await pgCtl(['stop', '-m', 'fast', '-w', '-t', '60']);
      return { wasRunning: true };
    },
    async logs(follow) {
      await fs.stat(p.log).catch(() => {
        throw new UserError(`no server log yet at ${p.log}`, 'start the server first: pnpm db:up');
      });
      await exec('tail', ['-n', '100', ...(follow ? ['-F'] : []), p.log], { interactive: true, nothrow: true });
    },
    // nothrow: their exit status is the task's, not an error of ours.
    async shell(args) {
      return (await exec(cfg.env.SHELL || 'bash', [...args], { interactive: true, nothrow: true, env: await pgEnv(ctx, await target()) })).code;
    },
    async psql(args) {
      return (await exec('psql', [...args], { interactive: true, nothrow: true, env: await pgEnv(ctx, await target()) })).code;
    },
    async destroy() {
      if (await running()) await pgCtl(['stop', '-m', 'fast', '-w', '-t', '60']);
      await fs.rm(p.dir, { recursive: true, force: true });
    },
    async migrate(cmd, opts = {}) {
      // Only the names now: the runner checks the texts of the files it will run once it knows which
      // (nothing pending reads no file).
      const migrations = loadMigrations(cfg.migrationsDir, { texts: 'later' });
      const t = await target('migrator');
      return withClient({ ...t, applicationName: 'pg-deploy migrate' }, (c) =>
        runMigrations(ctx, c, migrations, cmd, { lockTimeoutMs: cfg.lockTimeoutMs, singleTransaction: opts.singleTransaction }));
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

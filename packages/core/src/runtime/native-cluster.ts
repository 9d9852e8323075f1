import path from 'node:path';
import type { Ctx } from '../context.ts';
import { CommandError, UserError } from '../errors.ts';
import type { Roles } from '../roles.ts';
import { tlsFiles } from '../tls.ts';
import type { NativeHome, NativePaths } from './native-home.ts';
import { whoIs } from './processes.ts';

/**
 * initdb into a folder of this process's own, renamed to the data directory once it succeeded: a
 * failed or killed initdb never leaves a half-made cluster where the data belongs.
 */
export async function initdb(ctx: Ctx, home: NativeHome, r: Roles, s: NativePaths): Promise<void> {
  const { cfg, exec, fs } = ctx;
  const u = await home.serverUser();
  const fresh = path.join(s.dir, `data.initdb-${process.pid}`);
  await fs.rm(fresh, { recursive: true, force: true });
  // The password file exists only for this call: 0600, the server user's.
  const pwfile = path.join(s.dir, `.pw-${process.pid}`);
  await fs.writeFile(pwfile, r.admin.password, { mode: 0o600, flag: 'wx' });
  try {
    await home.own(pwfile);
    const args = ['-D', fresh, '-U', r.admin.user, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--no-locale'];
    const failure = { message: 'initdb failed', hint: 'see the message above; nothing was left behind, so the next db:up starts clean' };
    await exec(await home.bin('initdb', s.dir), args, { asUser: u, cwd: s.dir, failure }).catch((e: unknown) => {
      if (!(e instanceof CommandError) || !/Permission denied/i.test(e.stderr)) throw e;
      const hint = `the server user "${cfg.nativeUser}" must be able to reach ${s.dir}: make its parent directories searchable (chmod o+x), or set DB_NATIVE_DIR elsewhere`;
      throw new CommandError(e.cmd, e.args, e.code, e.stderr, { ...failure, hint });
    });
    await fs.rename(fresh, s.data);
  } finally {
    await fs.rm(pwfile, { force: true });
    await fs.rm(fresh, { recursive: true, force: true });
  }
}

/**
 * Removes, under the lock, what killed runs of db:up left: initdb folders and password files of dead
 * processes, and a data directory without PG_VERSION (it holds no cluster).
 */
export async function removeStartLeftovers(ctx: Ctx, home: NativeHome, s: NativePaths): Promise<void> {
  const { fs, log } = ctx;
  for (const name of await fs.readdir(s.dir).catch(() => [] as string[])) {
    const m = /^(?:data\.initdb|\.pw)-(\d+)$/.exec(name);
    if (m && Number(m[1]) !== process.pid && (await whoIs(ctx, Number(m[1]), [])).kind === 'dead')
      await fs.rm(path.join(s.dir, name), { recursive: true, force: true });
  }
  const data = await fs.readdir(s.data).catch(() => undefined); // no data directory yet
  if (data && !data.includes('PG_VERSION')) {
    await fs.rm(s.data, { recursive: true, force: true });
    log.warn(`removed ${home.shown(home.p.data)}: it held no cluster (no PG_VERSION), as an interrupted initdb leaves it`);
  }
}

/** Copies the certificate and key where the server user owns them: PostgreSQL insists on a 0600 key it owns. */
export async function installTls(ctx: Ctx, home: NativeHome): Promise<void> {
  const { cfg, fs } = ctx;
  const src = tlsFiles(cfg.sslDir);
  for (const [from, to, mode] of [
    [src.serverCrt, 'server.crt', 0o644],
    [src.serverKey, 'server.key', 0o600],
    [src.caCrt, 'ca.crt', 0o644],
  ] as const) {
    const dest = path.join(home.p.tls, to);
    const tmp = `${dest}.tmp`;
    await fs.copyFile(from, tmp).catch((e: NodeJS.ErrnoException) => {
      throw e.code === 'ENOENT'
        ? new UserError(`${path.relative(cfg.root, from)} is missing`, 'create the certificates with: pnpm db:secure')
        : e;
    });
    await fs.chmod(tmp, mode);
    await home.own(tmp);
    await fs.rename(tmp, dest);
  }
}

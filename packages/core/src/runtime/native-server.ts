import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { NativeHome, NativePaths } from './native-home.ts';
import { readPidFile, whoIs } from './processes.ts';
import { nativeArchive } from '../backup/wal-native.ts';
import { LOOPBACK } from './runtime.ts';

/** Single-quotes a value for the shell line pg_ctl builds from `-o`. */
function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * pg_ctl's `-o` line for a server of this home: the shared configuration, certificate and key, WAL
 * archiving, on loopback at `port` with its socket in `socketDir`. The primary and the standby differ only there.
 */
export async function startOptions(ctx: Ctx, home: NativeHome, s: NativePaths, at: { port: number; socketDir: string }): Promise<string> {
  const conf = await home.serverConfig(s.dir);
  return [
    ['config_file', path.join(conf, 'postgresql.conf')],
    ['hba_file', path.join(conf, 'pg_hba.conf')],
    ['ssl_cert_file', path.join(s.tls, 'server.crt')],
    ['ssl_key_file', path.join(s.tls, 'server.key')],
    ['listen_addresses', LOOPBACK], // the native server is for this machine only
    ['port', String(at.port)],
    ['unix_socket_directories', at.socketDir],
    // WAL archiving for point-in-time recovery (backup/wal-native.ts); a standby archives once promoted.
    ...(await nativeArchive(ctx, home).serverOptions(s)),
  ]
    .map(([k, v]) => `-c ${shq(`${k}=${v}`)}`)
    .join(' ');
}

/** The native server's process: its state from the pid file, its start and stop through pg_ctl, its log. */
export function nativeServer(ctx: Ctx, home: NativeHome) {
  const { cfg, exec, fs, log } = ctx;
  const { p, sp, shown } = home;

  async function pgCtl(args: string[]) {
    const s = await sp();
    return exec(await home.bin('pg_ctl', s.dir), ['-D', s.data, ...args], { asUser: await home.serverUser(), cwd: s.dir });
  }

  /** Up (the pid is this data directory's postmaster), down, or down with a stale pid file, which `stale` explains. */
  async function state(): Promise<{ up: true; pid: number; port?: number } | { up: false; stale?: string }> {
    const pf = await readPidFile(ctx, p.data);
    if (!pf) return { up: false };
    const who = await whoIs(ctx, pf.pid, [p.data, (await sp()).data, pf.dataDir]);
    if (who.kind === 'postmaster' || who.kind === 'unknown') return { up: true, pid: pf.pid, port: pf.port };
    return {
      up: false,
      stale: who.kind === 'dead' ? `its pid ${pf.pid} no longer runs` : `its pid ${pf.pid} is ${who.what}, not this server`,
    };
  }

  const running = async (): Promise<boolean> => (await state()).up;

  /** A server of this data directory on another port than ENV_DB_PORT (changed while it ran) is named, with the way out. */
  async function assertPort(): Promise<void> {
    const st = await state();
    if (st.up && st.port !== undefined && st.port !== cfg.port) {
      throw new UserError(
        `PostgreSQL runs from ${shown(p.data)} on port ${st.port}, but ENV_DB_PORT is ${cfg.port} (changed while it ran)`,
        `restart it on ${cfg.port}: pnpm db:down && pnpm db:up (or set ENV_DB_PORT back to ${st.port})`,
      );
    }
  }

  /** Removes a postmaster.pid that state() proved stale, saying so. */
  async function removeStalePid(why: string): Promise<void> {
    await fs.rm(path.join(p.data, 'postmaster.pid'), { force: true });
    log.warn(`removed a stale ${shown(path.join(p.data, 'postmaster.pid'))}: ${why} (left by a crash or a reboot)`);
  }

  async function start(s: NativePaths): Promise<void> {
    await pgCtl(['start', '-W', '-l', s.log, '-o', await startOptions(ctx, home, s, { port: cfg.port, socketDir: s.run })]);
  }

  const stop = () => pgCtl(['stop', '-m', 'fast', '-w', '-t', '60']);

  async function tailLog(lines = 5, from = 0): Promise<string> {
    const text = (await fs.readFile(p.log).catch(() => Buffer.alloc(0))).subarray(from).toString('utf8');
    return text.trim().split('\n').slice(-lines).join('\n');
  }

  /**
   * Whether a server we just started has failed: a FATAL/PANIC in the log since `logFrom`, or no pid
   * file after 10s (`pg_ctl start -W` returns before the postmaster writes it).
   */
  async function failedToStart(logFrom: number, sinceMs: number): Promise<string | undefined> {
    if (await running()) return undefined;
    const text = await tailLog(20, logFrom);
    const fatal = text.split('\n').filter((l) => /\b(FATAL|PANIC)\b/.test(l));
    if (fatal.length) return fatal.slice(-2).join(' | ');
    if (sinceMs > 10_000) return text.split('\n').slice(-3).join(' | ') || 'no postmaster after 10s and nothing in the log';
    return undefined;
  }

  /** initdb writes PG_VERSION: a data directory without it holds no cluster. */
  const hasData = () =>
    fs.stat(path.join(p.data, 'PG_VERSION')).then(
      () => true,
      () => false,
    );

  return { state, running, assertPort, removeStalePid, start, stop, failedToStart, hasData };
}

import path from 'node:path';
import net from 'node:net';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';

/** Fails with the fix when something else already listens on the port. */
export async function assertPortFree(port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'EADDRINUSE'
          ? new UserError(
              `port ${port} on 127.0.0.1 is taken by another process`,
              `stop that process, or set ENV_DB_PORT to a free port in .env.local`,
            )
          : e,
      ),
    );
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve()));
  });
}

/** postmaster.pid's first lines (pid, data directory, start time, port); a starting server may not have written them all. */
export async function readPidFile(
  ctx: Pick<Ctx, 'fs'>,
  dataDir: string,
): Promise<{ pid: number; dataDir: string; port?: number } | undefined> {
  const lines = (await ctx.fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n');
  const pid = Number(lines[0]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const port = Number(lines[3]);
  return { pid, dataDir: lines[1] ?? '', ...(lines[3] && Number.isInteger(port) ? { port } : {}) };
}

/**
 * Who a pid is: the postmaster of one of `dataDirs`, `other` (a reused pid), `dead`, or `unknown`
 * (no /proc). The postmaster keeps pg_ctl's command line (`postgres -D DATADIR`); children retitle.
 */
export async function whoIs(
  ctx: Pick<Ctx, 'fs'>,
  pid: number,
  dataDirs: readonly string[],
): Promise<{ kind: 'postmaster' | 'other' | 'dead' | 'unknown'; what?: string }> {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return { kind: 'dead' };
  }
  const raw = await ctx.fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(
    (e: NodeJS.ErrnoException) =>
      (e.code === 'ENOENT' &&
        ctx.fs.stat('/proc/self').then(
          () => null,
          () => undefined,
        )) ||
      undefined,
  );
  if (raw === null) return { kind: 'dead' }; // /proc exists, and the process went meanwhile
  if (raw === undefined) return { kind: 'unknown' };
  const argv = raw.split('\0').filter(Boolean);
  const what = argv.length ? `\`${argv.join(' ').slice(0, 60)}\`` : 'a process without a command line';
  if (!argv.length || !['postgres', 'postmaster'].includes(path.basename(argv[0]))) return { kind: 'other', what };
  const d = argv.indexOf('-D');
  if (d < 0 || !argv[d + 1]) return { kind: 'unknown' }; // without -D (PGDATA, which we never use): cannot tell
  return dataDirs.map((x) => path.resolve(x)).includes(path.resolve(argv[d + 1]))
    ? { kind: 'postmaster' }
    : { kind: 'other', what: `${what} (another cluster)` };
}

/** A process's start time (/proc/PID/stat field 22): with the pid, it names one process even after the pid is reused. '' where unknown. */
async function startTime(ctx: Pick<Ctx, 'fs'>, pid: number): Promise<string> {
  const stat = await ctx.fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The command name (field 2) may hold spaces: count from the last ')'.
  return stat ? (stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '') : '';
}

/**
 * Takes `file` as this process's lock (O_EXCL, holding `pid start-time`) and returns its release.
 * A live holder is waited for, at most `timeoutMs`; a dead one's lock is stale and taken over.
 */
export async function takeLock(
  ctx: Pick<Ctx, 'fs' | 'log' | 'clock'>,
  file: string,
  what: string,
  timeoutMs: number,
): Promise<() => Promise<void>> {
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
        if ((await ctx.fs.readFile(file, 'utf8').catch(() => '')) === me) await ctx.fs.rm(file, { force: true }); // only our own lock
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const held = await ctx.fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e; // unreadable: this loop would never end
      return undefined;
    });
    if (held === undefined) continue; // released meanwhile
    const [pidText, since] = held.trim().split(' ');
    const pid = Number(pidText);
    // Empty: its maker is between the create and the write.
    const alive =
      held === '' ||
      (Number.isInteger(pid) &&
        pid > 0 &&
        (await whoIs(ctx, pid, [])).kind !== 'dead' &&
        (!since || (await startTime(ctx, pid)) === since));
    if (!alive) {
      // Moved aside first, so that of two processes breaking it at once only one removes it.
      const aside = `${file}.stale-${process.pid}`;
      if (
        await ctx.fs.rename(file, aside).then(
          () => true,
          () => false,
        )
      ) {
        if ((await ctx.fs.readFile(aside, 'utf8').catch(() => '')) !== held) {
          // Not the lock we judged: put it back, unless a new one was taken meanwhile.
          await ctx.fs.link(aside, file).catch((e: NodeJS.ErrnoException) => {
            if (e.code !== 'EEXIST') throw e;
          });
        }
        await ctx.fs.rm(aside, { force: true });
      }
      continue;
    }
    if (!said) ctx.log.info(`${what} (pid ${pidText}) is already under way here; waiting for it`);
    said = true;
    if (ctx.clock().getTime() - start > timeoutMs) {
      throw new UserError(
        `${what} (pid ${pidText}) is still under way after ${Math.round(timeoutMs / 1000)}s`,
        `wait for it to end and run again; if pid ${pidText} is not pg-deploy, remove ${file}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { nativeHome, type NativePaths } from '../runtime/native-home.ts';
import { nativeServer } from '../runtime/native-server.ts';
import { assertArchiving, nativeArchive } from './wal-native.ts';

// What point-in-time recovery needs of the place the server runs, beyond the Runtime interface:
// the archive folder, and the data directory itself. Native only for now: docker keeps its data in
// a volume, which needs a one-off container to replace (not built yet).

function unsupported(rt: Runtime): never {
  throw new UserError(
    `physical backups and point-in-time recovery are not available on the ${rt.label} runtime yet`,
    'use the native runtime (DB_RUNTIME=native), or logical backups: pnpm db:backup / pnpm db:restore',
  );
}

/** The WAL archive of the runtime `rt` runs on. */
export function archiveFor(ctx: Ctx, rt: Runtime) {
  if (rt.label !== 'native') unsupported(rt); // a label, not a method: Runtime is shared with other work in flight
  const a = nativeArchive(ctx, nativeHome(ctx));
  return {
    location: a.location,
    arm: a.arm,
    restoreCommand: a.restoreCommand,
    async check(settings: { archive_mode: string; archive_command: string }) {
      assertArchiving(settings, await a.location());
    },
  };
}

/** The native data directory, as a recovery replaces it. */
export function pitrHost(ctx: Ctx, rt: Runtime) {
  if (rt.label !== 'native') unsupported(rt);
  const home = nativeHome(ctx);
  const server = nativeServer(ctx, home);
  return {
    home,
    server,
    paths: (): Promise<NativePaths> => home.sp(),
    logFile: home.p.log,
    /** Makes `dir` the server user's, all of it (tar as root keeps the archive's owners). */
    async ownTree(dir: string) {
      const u = await home.serverUser();
      if (u)
        await ctx.exec('chown', ['-R', `${u.uid}:${u.gid}`, dir], { failure: { message: `could not give ${dir} to the server user` } });
    },
    aside: (s: NativePaths) => path.join(s.dir, `data.before-pitr-${process.pid}`),
  };
}

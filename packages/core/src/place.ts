import type fsp from 'node:fs/promises';

/** Puts a finished file at `dest`, in place where it exists: Compose's file mounts pin the inode. */
export async function place(fs: typeof fsp, from: string, dest: string, mode: number): Promise<void> {
  const exists = await fs.stat(dest).then(
    () => true,
    () => false,
  );
  if (!exists) {
    await fs.chmod(from, mode);
    await fs.rename(from, dest);
    return;
  }
  await fs.chmod(dest, mode); // before the new content goes in, never after
  await fs.copyFile(from, dest);
  await fs.rm(from, { force: true });
}

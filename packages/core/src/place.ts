import type fsp from 'node:fs/promises';

/**
 * Puts a finished file at `dest`. Where `dest` exists its content is replaced in place, keeping
 * the inode: Compose's file secrets and file bind mounts pin the inode they were made with, so a
 * rename would never reach a running container (it would go on reading the old key or password).
 * The content is complete beside it first (`from`), so the write is one short copy; the caller
 * keeps the old content to put back if a later step fails.
 */
export async function place(fs: typeof fsp, from: string, dest: string, mode: number): Promise<void> {
  const exists = await fs.stat(dest).then(() => true, () => false);
  if (!exists) {
    await fs.chmod(from, mode);
    await fs.rename(from, dest);
    return;
  }
  await fs.chmod(dest, mode); // before the new content goes in, never after
  await fs.copyFile(from, dest);
  await fs.rm(from, { force: true });
}

import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UsageError, UserError } from '../errors.ts';
import { existingVersions, nextVersion } from './files.ts';

const NAME_RE = /^[A-Za-z0-9_]+$/;

/** Creates the next up/down pair: both files or neither, never over a file or a version already taken. */
export async function createMigration(ctx: Pick<Ctx, 'fs' | 'clock'>, dir: string, name: string, timestamp: boolean): Promise<string[]> {
  if (!NAME_RE.test(name))
    throw new UsageError(
      `"${name}" is not a migration name`,
      'use letters, digits and underscores: pnpm db:migrate:create add_users_table',
    );
  await ctx.fs.mkdir(dir, { recursive: true });
  const versions = existingVersions(dir);
  const v = nextVersion(versions, ctx.clock(), timestamp);
  if (versions.includes(Number(v))) {
    throw new UserError(
      `version ${v} is already taken in ${dir}`,
      'wait a second and run it again (timestamps have one-second resolution)',
    );
  }
  const dirs = ['up', 'down'] as const;
  const files = dirs.map((d) => path.join(dir, `${v}_${name}.${d}.sql`));
  const made: string[] = [];
  try {
    for (const [i, f] of files.entries()) {
      // Only a comment: db:migrate refuses it as empty until it is written.
      await ctx.fs
        .writeFile(f, `-- ${dirs[i]} migration ${v} ${name}: write it here (an empty file is refused)\n`, { flag: 'wx' })
        .catch((e: NodeJS.ErrnoException) => {
          throw e.code === 'EEXIST' ? new UserError(`${path.basename(f)} already exists; nothing was created`, 'pick another name') : e;
        });
      made.push(f);
    }
  } catch (e) {
    for (const f of made) await ctx.fs.rm(f, { force: true });
    throw e;
  }
  return files;
}

import path from 'node:path';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { newPassword, readSecret, readSecrets, type SecretName } from './secrets.ts';
import { passwordSql, type Login } from './roles.ts';
import { tryLogin } from './provision.ts';
import { place } from './place.ts';
import type { Runtime } from './runtime/runtime.ts';

export const ROTATABLE = ['app', 'migrate', 'postgres'] as const;
export type Rotatable = (typeof ROTATABLE)[number];

/**
 * Changes a role's password in the database and in its secret file together: both or neither.
 * The new content is written beside the old file (`.new`), the old content kept (`.old`), and the
 * file's content replaced in place (place.ts says why not a rename: bind mounts pin the inode);
 * then ALTER ROLE (a SCRAM verifier, never the password); if that fails the old content goes back. The image reads POSTGRES_PASSWORD_FILE only when it first initialises, so rewriting the
 * file alone would change nothing: this is the only way a password really changes.
 */
export async function rotate(ctx: Ctx, rt: Runtime, which: Rotatable, opts: { fromFile: boolean }): Promise<{ role: string }> {
  const roles = await readSecrets(ctx);
  const login: Login = which === 'app' ? roles.app : which === 'migrate' ? roles.migrator : roles.admin;
  const name = `${which}_password` as SecretName;
  const file = path.join(ctx.cfg.secretsDir, name);
  const admin = await rt.admin(); // bound to the current superuser password, before anything changes
  let password = await readSecret(ctx, name);
  const old = `${file}.old`;
  if (!opts.fromFile) {
    password = newPassword();
    ctx.log.secret(password);
    const fresh = `${file}.new`;
    await ctx.fs.rm(fresh, { force: true });
    await ctx.fs.rm(old, { force: true });
    try {
      await ctx.fs.writeFile(fresh, password, { mode: 0o600, flag: 'wx' });
      await ctx.fs.copyFile(file, old);
      await place(ctx.fs, fresh, file, 0o600);
    } catch (e) {
      await ctx.fs.copyFile(old, file).catch(() => {}); // a replacement that failed half-way
      await ctx.fs.rm(fresh, { force: true });
      await ctx.fs.rm(old, { force: true });
      throw new UserError(`could not replace ${name}: ${(e as Error).message}; nothing was changed`, `check the permissions of ${ctx.cfg.secretsDir}`);
    }
  }
  try {
    await admin.query(passwordSql({ user: login.user, password }));
  } catch (e) {
    if (!opts.fromFile) await ctx.fs.copyFile(old, file); // the database kept the old password: so does the file
    await ctx.fs.rm(old, { force: true });
    throw new UserError(`ALTER ROLE ${login.user} failed: ${(e as Error).message}; the secret file was restored`, 'is the server up? pnpm db:up');
  }
  await ctx.fs.rm(old, { force: true });
  if (which !== 'postgres') {
    const t = await rt.target(which === 'app' ? 'app' : 'migrator');
    await tryLogin({ ...t, password });
  }
  return { role: login.user };
}

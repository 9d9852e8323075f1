import path from 'node:path';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { newPassword, readSecret, readSecrets, type SecretName } from './secrets.ts';
import { passwordSql, type Login } from './roles.ts';
import { driftError, tryLogin, type Admin } from './provision.ts';
import { ident, literal } from './pg.ts';
import { selectRuntime } from './runtime/select.ts';
import type { Runtime } from './runtime/runtime.ts';

export const ROTATABLE = ['app', 'migrate', 'postgres'] as const;
export type Rotatable = (typeof ROTATABLE)[number];

/**
 * The files of one rotation: the secret itself, the old password (`.old`) and the new one (`.new`).
 * `.old` and `.new` exist only while a rotation runs, or after one was killed.
 */
function files(ctx: Pick<Ctx, 'cfg'>, which: Rotatable) {
  const name = `${which}_password` as SecretName;
  const file = path.join(ctx.cfg.secretsDir, name);
  return { name, file, old: `${file}.old`, fresh: `${file}.new`, shown: path.relative(ctx.cfg.root, file) || file };
}

const exists = (ctx: Pick<Ctx, 'fs'>, f: string) => ctx.fs.stat(f).then(() => true, () => false);

/** A password the server refused, as opposed to a server that could not be asked. */
function refused(e: unknown): boolean {
  return (e as { code?: string }).code === '28P01' || /password authentication failed/i.test((e as Error).message ?? '');
}

/**
 * A runtime that reads the secret files now: the native runtime keeps the secrets it read first,
 * and a rotation changes them under it. Quiet, since the task has already said which runtime runs.
 */
const current = (ctx: Ctx): Promise<Runtime> => selectRuntime({ ...ctx, log: { ...ctx.log, info: () => {} } });

/** The superuser's channel, bound to what postgres_password holds now. */
const adminNow = async (ctx: Ctx): Promise<Admin> => (await current(ctx)).admin();

/**
 * Whether the server accepts the password the role's file holds now: a login with it (the
 * superuser on the socket, the others over verified TLS). A server that cannot be reached is an
 * error, never a "no".
 */
async function fileWorks(ctx: Ctx, which: Rotatable): Promise<boolean> {
  try {
    if (which === 'postgres') await (await adminNow(ctx)).query('SELECT 1');
    else await tryLogin(await (await current(ctx)).target(which === 'app' ? 'app' : 'migrator'));
    return true;
  } catch (e) {
    if (refused(e)) return false;
    if (e instanceof UserError) throw e;
    throw new UserError(`could not log in to check the password of ${which}: ${(e as Error).message}`, 'is the server up? pnpm db:up');
  }
}

/** Writes a file that did not exist, 0600, and flushes it: what it holds survives a kill or a crash. */
async function writeNew(ctx: Pick<Ctx, 'fs'>, file: string, value: string): Promise<void> {
  const h = await ctx.fs.open(file, 'wx', 0o600);
  try {
    await h.writeFile(value);
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Flushes a file to disk. */
async function flush(ctx: Pick<Ctx, 'fs'>, file: string): Promise<void> {
  const h = await ctx.fs.open(file, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Replaces `dest`'s content with `from`'s in place, keeping the inode (Compose's file secrets pin
 * it: a rename would never reach a running container; place.ts says the same), then flushes it.
 */
async function copyInPlace(ctx: Pick<Ctx, 'fs'>, from: string, dest: string): Promise<void> {
  await ctx.fs.copyFile(from, dest);
  await flush(ctx, dest);
}

/** Removes `.old` and `.new`: only ever called once the file itself is proven to work. */
async function forget(ctx: Pick<Ctx, 'fs'>, f: ReturnType<typeof files>): Promise<void> {
  await ctx.fs.rm(f.fresh, { force: true });
  await ctx.fs.rm(f.old, { force: true });
}

/**
 * Finishes or rolls back a rotation of `which` that was killed (its `.old` or `.new` is still
 * there), whatever step it died at: the password the server accepts is in the file, in `.new` (the
 * server already has it) or in `.old` (it never got the new one); a kill during the copy into the
 * file can even leave the file empty, but never the other two. Each is tried in the file, in that
 * order, by logging in with it; the first the server accepts stays, and only then are `.old` and
 * `.new` removed. When none works nothing is removed, and the file is left as it was found.
 * Returns the line it said, if there was anything to do.
 */
export async function resumeRotation(ctx: Ctx, which: Rotatable): Promise<string | undefined> {
  const f = files(ctx, which);
  const leftovers = [f.fresh, f.old];
  const present = [];
  for (const l of leftovers) if (await exists(ctx, l)) present.push(l);
  if (!present.length) return undefined;
  const valid = await readSecret(ctx, f.name).then(() => true, () => false);
  if (valid && (await fileWorks(ctx, which))) {
    await forget(ctx, f);
    return say(ctx, `an interrupted rotation of ${which} left ${f.shown}.old/.new behind; ${f.shown} holds the password the server accepts, so they were removed`);
  }
  const found = await ctx.fs.readFile(f.file).catch(() => undefined);
  for (const candidate of present) {
    const value = await ctx.fs.readFile(candidate, 'utf8');
    if (!value || /[\r\n]/.test(value)) continue; // never written to the server: a kill while it was being written
    await copyInPlace(ctx, candidate, f.file);
    if (await fileWorks(ctx, which)) {
      await forget(ctx, f);
      return say(ctx, candidate === f.fresh
        ? `finished an interrupted rotation of ${which}: the server had the new password; ${f.shown} now holds it`
        : `rolled back an interrupted rotation of ${which}: the server kept the old password; ${f.shown} holds it again`);
    }
  }
  if (found !== undefined) await ctx.fs.writeFile(f.file, found); // as it was found: same inode, nothing lost
  throw new UserError(
    `role ${which === 'postgres' ? 'postgres (the superuser)' : which} accepts none of ${f.shown}, ${f.shown}.old and ${f.shown}.new (left by an interrupted pnpm db:secrets:rotate ${which})`,
    `every file was kept; put back, as ${f.shown}, the file that held the password the server has, and run pnpm db:secrets:rotate ${which} again`,
  );
}

function say(ctx: Ctx, line: string): string {
  ctx.log.warn(line);
  return line;
}

/** Resumes every killed rotation, the superuser's first (the others' need it). */
export async function resumeRotations(ctx: Ctx): Promise<string[]> {
  const said: string[] = [];
  for (const which of ['postgres', 'app', 'migrate'] as const) {
    const line = await resumeRotation(ctx, which);
    if (line) said.push(line);
  }
  return said;
}

/**
 * Changes a role's password in the database and in its secret file together, resumably: whatever
 * moment it is killed at, the next run finds which password the server accepts and finishes or
 * rolls back (resumeRotation), and `.old` is removed only once the file is proven to work.
 * The steps: the new password into `.new` (flushed), the old file's copy into `.old` (flushed),
 * ALTER ROLE (a SCRAM verifier, never the password), then `.new` copied into the file in place, a
 * login with the file, and only then `.old` and `.new` removed. The server changes before the
 * file, so the superuser's own password is changed through a session the old file opens (in
 * docker, the container reads the file at every session). The image reads POSTGRES_PASSWORD_FILE
 * only when it first initialises, so rewriting the file alone would change nothing: this is the
 * only way a password really changes.
 */
export async function rotate(ctx: Ctx, _rt: Runtime, which: Rotatable, opts: { fromFile: boolean }): Promise<{ role: string; resumed: string[] }> {
  const resumed = await resumeRotations(ctx);
  const roles = await readSecrets(ctx);
  const login: Login = which === 'app' ? roles.app : which === 'migrate' ? roles.migrator : roles.admin;
  const f = files(ctx, which);
  const admin = await adminNow(ctx); // the superuser as its file says now, before anything changes
  const asSuperuser = (sql: string) =>
    admin.query(sql).catch((e) => {
      throw driftError(e, 'postgres', roles.admin.user)
        ?? new UserError(`ALTER ROLE ${login.user} failed: ${(e as Error).message}; the secret file was not changed`, 'is the server up? pnpm db:up');
    });
  if (opts.fromFile) {
    await asSuperuser(passwordSql(login));
    if (!(await fileWorks(ctx, which))) throw new UserError(`role ${login.user} still refuses ${f.shown} after ALTER ROLE`, 'see the server log: pnpm db:logs');
    return { role: login.user, resumed };
  }
  // What to put back, exactly, if the file cannot be replaced: the stored verifier, not a password.
  const before = (await asSuperuser(`SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = ${literal(login.user)}`))[0]?.[0] ?? '';
  const password = newPassword();
  ctx.log.secret(password);
  try {
    await writeNew(ctx, f.fresh, password);
    await ctx.fs.copyFile(f.file, f.old);
    await flush(ctx, f.old);
  } catch (e) {
    await forget(ctx, f); // the server was not asked yet: the file is as it was
    throw new UserError(`could not replace ${f.name}: ${(e as Error).message}; nothing was changed`, `check the permissions of ${ctx.cfg.secretsDir}`);
  }
  ctx.log.step(`changing the password of ${login.user}`);
  try {
    await asSuperuser(passwordSql({ user: login.user, password }));
  } catch (e) {
    // The server normally kept the old password; .old and .new go only once the file is proven.
    if (await fileWorks(ctx, which).catch(() => false)) await forget(ctx, f);
    throw e;
  }
  try {
    await copyInPlace(ctx, f.fresh, f.file);
  } catch (e) {
    const why = (e as Error).message;
    // The superuser's session still opens (not so for its own password, which just changed): the
    // role gets back exactly the verifier it had, and the file its old content (a copy that failed
    // half-way). Both as they were: nothing to resume.
    const reverted = which !== 'postgres' && before !== ''
      && (await admin.query(`ALTER ROLE ${ident(login.user)} PASSWORD ${literal(before)}`).then(() => true, () => false))
      && (await ctx.fs.copyFile(f.old, f.file).then(() => true, () => false));
    if (reverted) {
      await forget(ctx, f);
      throw new UserError(`could not replace ${f.name}: ${why}; nothing was changed`, `check the permissions of ${ctx.cfg.secretsDir}`);
    }
    throw new UserError(
      `could not replace ${f.name}: ${why}; the server already has the new password, kept in ${f.shown}.new (the old one in ${f.shown}.old)`,
      `fix the cause and run pnpm db:secrets:rotate ${which} again: it finishes the rotation`,
    );
  }
  if (!(await fileWorks(ctx, which))) {
    throw new UserError(`role ${login.user} refuses the new ${f.shown}; ${f.shown}.old and .new were kept`, `run pnpm db:secrets:rotate ${which} again: it finishes or rolls back`);
  }
  await forget(ctx, f);
  return { role: login.user, resumed };
}

import path from 'node:path';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { newPassword, readSecret, readSecrets, type SecretName } from './secrets.ts';
import { passwordSql, type Login } from './roles.ts';
import { driftError, tryLogin, type Admin } from './provision.ts';
import { ident, literal, sqlState } from './pg.ts';
import { selectRuntime } from './runtime/select.ts';
import type { Runtime } from './runtime/runtime.ts';

export const ROTATABLE = ['app', 'migrate', 'postgres'] as const;
export type Rotatable = (typeof ROTATABLE)[number];

/** The secret file and, while a rotation runs or after one was killed, `.old` and `.new`. */
function files(ctx: Pick<Ctx, 'cfg'>, which: Rotatable) {
  const name = `${which}_password` as SecretName;
  const file = path.join(ctx.cfg.secretsDir, name);
  return { name, file, old: `${file}.old`, fresh: `${file}.new`, shown: path.relative(ctx.cfg.root, file) || file };
}

const exists = (ctx: Pick<Ctx, 'fs'>, f: string) =>
  ctx.fs.stat(f).then(
    () => true,
    () => false,
  );

function refused(e: unknown): boolean {
  return sqlState(e) === '28P01' || /password authentication failed/i.test((e as Error).message ?? '');
}

/** A fresh, quiet runtime: the native one keeps the secrets it read first, which a rotation changes. */
const current = (ctx: Ctx): Promise<Runtime> => selectRuntime({ ...ctx, log: { ...ctx.log, info: () => {} } });

const adminNow = async (ctx: Ctx): Promise<Admin> => (await current(ctx)).admin();

/** Whether the server accepts the role's file as it is now; a server that cannot be asked is an error, never a "no". */
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

async function writeNew(ctx: Pick<Ctx, 'fs'>, file: string, value: string): Promise<void> {
  const h = await ctx.fs.open(file, 'wx', 0o600);
  try {
    await h.writeFile(value);
    await h.sync();
  } finally {
    await h.close();
  }
}

async function flush(ctx: Pick<Ctx, 'fs'>, file: string): Promise<void> {
  const h = await ctx.fs.open(file, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Replaces `dest`'s content in place (Compose pins the inode, see place.ts), then flushes it. */
async function copyInPlace(ctx: Pick<Ctx, 'fs'>, from: string, dest: string): Promise<void> {
  await ctx.fs.copyFile(from, dest);
  await flush(ctx, dest);
}

/** Only once the file itself is proven to work. */
async function forget(ctx: Pick<Ctx, 'fs'>, f: ReturnType<typeof files>): Promise<void> {
  await ctx.fs.rm(f.fresh, { force: true });
  await ctx.fs.rm(f.old, { force: true });
}

/** Finishes or rolls back a killed rotation: the file, `.new`, `.old` are tried by logging in; the first accepted stays. */
export async function resumeRotation(ctx: Ctx, which: Rotatable): Promise<string | undefined> {
  const f = files(ctx, which);
  const leftovers = [f.fresh, f.old];
  const present = [];
  for (const l of leftovers) if (await exists(ctx, l)) present.push(l);
  if (!present.length) return undefined;
  const valid = await readSecret(ctx, f.name).then(
    () => true,
    () => false,
  );
  if (valid && (await fileWorks(ctx, which))) {
    await forget(ctx, f);
    return say(
      ctx,
      `an interrupted rotation of ${which} left ${f.shown}.old/.new behind; ${f.shown} holds the password the server accepts, so they were removed`,
    );
  }
  const found = await ctx.fs.readFile(f.file).catch(() => undefined); // may be gone: a kill mid-copy
  for (const candidate of present) {
    const value = await ctx.fs.readFile(candidate, 'utf8');
    if (!value || /[\r\n]/.test(value)) continue; // never written to the server: a kill while it was being written
    await copyInPlace(ctx, candidate, f.file);
    if (await fileWorks(ctx, which)) {
      await forget(ctx, f);
      return say(
        ctx,
        candidate === f.fresh
          ? `finished an interrupted rotation of ${which}: the server had the new password; ${f.shown} now holds it`
          : `rolled back an interrupted rotation of ${which}: the server kept the old password; ${f.shown} holds it again`,
      );
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

/** Changes a password on the server and in its file; a killed run is finished or rolled back by resumeRotation. */
export async function rotate(
  ctx: Ctx,
  _rt: Runtime,
  which: Rotatable,
  opts: { fromFile: boolean },
): Promise<{ role: string; resumed: string[] }> {
  const resumed = await resumeRotations(ctx);
  const roles = await readSecrets(ctx);
  const login: Login = which === 'app' ? roles.app : which === 'migrate' ? roles.migrator : roles.admin;
  const f = files(ctx, which);
  const admin = await adminNow(ctx); // the superuser as its file says now, before anything changes
  const asSuperuser = (sql: string) =>
    admin.query(sql).catch((e) => {
      throw (
        driftError(e, 'postgres', roles.admin.user) ??
        new UserError(
          `ALTER ROLE ${login.user} failed: ${(e as Error).message}; the secret file was not changed`,
          'is the server up? pnpm db:up',
        )
      );
    });
  if (opts.fromFile) {
    await asSuperuser(passwordSql(login));
    if (!(await fileWorks(ctx, which)))
      throw new UserError(`role ${login.user} still refuses ${f.shown} after ALTER ROLE`, 'see the server log: pnpm db:logs');
    return { role: login.user, resumed };
  }
  // The stored verifier, to put back if the file cannot be replaced.
  const before =
    (await asSuperuser(`SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = ${literal(login.user)}`))[0]?.[0] ?? '';
  const password = newPassword();
  ctx.log.secret(password);
  try {
    await writeNew(ctx, f.fresh, password);
    await ctx.fs.copyFile(f.file, f.old);
    await flush(ctx, f.old);
  } catch (e) {
    await forget(ctx, f); // the server was not asked yet: the file is as it was
    throw new UserError(
      `could not replace ${f.name}: ${(e as Error).message}; nothing was changed`,
      `check the permissions of ${ctx.cfg.secretsDir}`,
    );
  }
  ctx.log.step(`changing the password of ${login.user}`);
  try {
    await asSuperuser(passwordSql({ user: login.user, password }));
  } catch (e) {
    if (await fileWorks(ctx, which).catch(() => false)) await forget(ctx, f); // unproven: .old and .new stay for the next run
    throw e;
  }
  try {
    await copyInPlace(ctx, f.fresh, f.file);
  } catch (e) {
    const why = (e as Error).message;
    // Put both back as they were (not possible for the superuser's own, which just changed).
    const reverted =
      which !== 'postgres' &&
      before !== '' &&
      (await admin.query(`ALTER ROLE ${ident(login.user)} PASSWORD ${literal(before)}`).then(
        () => true,
        () => false,
      )) &&
      (await ctx.fs.copyFile(f.old, f.file).then(
        () => true,
        () => false,
      ));
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
    throw new UserError(
      `role ${login.user} refuses the new ${f.shown}; ${f.shown}.old and .new were kept`,
      `run pnpm db:secrets:rotate ${which} again: it finishes or rolls back`,
    );
  }
  await forget(ctx, f);
  return { role: login.user, resumed };
}

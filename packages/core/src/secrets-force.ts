import path from 'node:path';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { SECRET_NAMES, isPassword, readSecret, type SecretName } from './secrets.ts';
import { guardWithoutDatabase, type GuardOptions } from './guard.ts';
import type { Runtime } from './runtime/runtime.ts';
import { literal } from './pg.ts';

const TASK = 'db:secrets --force'; // as typed: the guard's messages and the audit name it so

/** Before db:secrets --force replaces files: no cluster (it would be locked out), the guard, the question; returns where the old files are kept. */
export async function beforeReplacingSecrets(ctx: Ctx, runtime: () => Promise<Runtime>, opts: GuardOptions): Promise<string | undefined> {
  const replacing: SecretName[] = [];
  for (const n of SECRET_NAMES)
    if (
      await ctx.fs.stat(path.join(ctx.cfg.secretsDir, n)).then(
        () => true,
        () => false,
      )
    )
      replacing.push(n);
  if (!replacing.length) return undefined; // nothing to replace: --force creates, as without it
  await refuseWhileClusterExists(ctx, await runtime());
  const where = path.relative(ctx.cfg.root, ctx.cfg.secretsDir) || ctx.cfg.secretsDir;
  await guardWithoutDatabase(
    ctx,
    TASK,
    opts,
    `replace ${replacing.join(', ')}`,
    `Replace ${replacing.length} secret file(s) in ${where} (${replacing.join(', ')}) with new names and passwords? The old ones are kept beside them.`,
  );
  return keepOldSecrets(ctx, replacing);
}

async function refuseWhileClusterExists(ctx: Ctx, rt: Runtime): Promise<void> {
  const rotate =
    'change passwords with pnpm db:secrets:rotate <app|migrate|postgres> (or --all); or start from nothing: pnpm db:delete, then pnpm db:secrets --force';
  if (await rt.running()) {
    const names = new Map<string, string>(); // role -> file
    for (const n of ['postgres_user', 'migrate_user', 'app_user'] as const) {
      const v = await readSecret(ctx, n).catch(() => undefined);
      if (v) names.set(v, n);
    }
    const db = await readSecret(ctx, 'postgres_db').catch(() => undefined);
    let live: string[];
    try {
      const admin = await rt.admin();
      const roles = names.size
        ? await admin.query(`SELECT rolname FROM pg_roles WHERE rolname IN (${[...names.keys()].map(literal).join(', ')}) ORDER BY 1`)
        : [];
      const dbs = db ? await admin.query(`SELECT datname FROM pg_database WHERE datname = ${literal(db)}`) : [];
      live = [...roles.map((r) => `role ${r[0]}`), ...dbs.map((r) => `database ${r[0]}`)];
    } catch (e) {
      throw new UserError(
        `${TASK} refused: PostgreSQL runs, and which of its roles the files name could not be checked (${(e as Error).message})`,
        rotate,
      );
    }
    if (live.length) {
      throw new UserError(
        `${TASK} refused: ${live.join(', ')} exist in the running database; new names or passwords would lock them out, so nothing was changed`,
        rotate,
      );
    }
    return;
  }
  if (await rt.hasData()) {
    throw new UserError(
      `${TASK} refused: PostgreSQL is stopped but ${rt.describeData()} holds a cluster whose roles were made from these files; new names or passwords would lock them out, so nothing was changed`,
      rotate,
    );
  }
}

/** Copies the files about to be replaced into a new private folder beside them; returns its path. */
async function keepOldSecrets(ctx: Ctx, names: SecretName[]): Promise<string> {
  const stamp = ctx
    .clock()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  const dir = await ctx.fs.mkdtemp(path.join(ctx.cfg.secretsDir, `replaced-${stamp}-`)); // 0700
  await ctx.fs.chmod(dir, 0o700);
  for (const n of names) {
    const to = path.join(dir, n);
    await ctx.fs.copyFile(path.join(ctx.cfg.secretsDir, n), to);
    await ctx.fs.chmod(to, 0o600);
    if (isPassword(n)) ctx.log.secret(await ctx.fs.readFile(to, 'utf8')); // redacted from now on, like every password read
  }
  return dir;
}

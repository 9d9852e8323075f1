import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError } from './errors.ts';
import type { Ctx } from './context.ts';
import type { Roles } from './roles.ts';

/** `postgres_*`: the image's superuser and database; `migrate_*`: the schema's owner; `app_*`: the applications' login. */
export const SECRET_NAMES = [
  'postgres_user',
  'postgres_password',
  'postgres_db',
  'migrate_user',
  'migrate_password',
  'app_user',
  'app_password',
] as const;
export type SecretName = (typeof SECRET_NAMES)[number];
/** The streaming replica's login (db:replica makes them when missing); not in SECRET_NAMES, which db:secrets and db:up need. */
export type ReplicationSecretName = 'replication_user' | 'replication_password';

const DEFAULTS: Partial<Record<SecretName, string>> = {
  postgres_user: 'postgres',
  postgres_db: 'app',
  migrate_user: 'app_owner',
  app_user: 'app',
};
export const isPassword = (n: SecretName | ReplicationSecretName) => n.endsWith('_password');

/** 32 random bytes, base64url: 43 characters that need no quoting in a URL or a shell. */
export function newPassword(): string {
  return randomBytes(32).toString('base64url');
}

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Reads one secret file; missing, empty, readable by others or ending in a newline is refused. */
export async function readSecret(ctx: Pick<Ctx, 'fs' | 'cfg'>, name: SecretName | ReplicationSecretName): Promise<string> {
  const file = path.join(ctx.cfg.secretsDir, name);
  const rel = path.relative(ctx.cfg.root, file) || file;
  let st;
  try {
    st = await ctx.fs.stat(file);
  } catch {
    throw new UserError(`secret ${rel} is missing`, 'create it with: pnpm db:secrets');
  }
  if (st.mode & 0o077) {
    throw new UserError(`secret ${rel} is readable by others (mode ${(st.mode & 0o777).toString(8)})`, `chmod 600 ${rel}`);
  }
  const value = await ctx.fs.readFile(file, 'utf8');
  if (value.length === 0)
    throw new UserError(
      `secret ${rel} is empty`,
      `write a value without a trailing newline: printf '%s' VALUE > ${rel} (or delete it and run pnpm db:secrets)`,
    );
  if (/[\r\n]$/.test(value))
    throw new UserError(`secret ${rel} ends with a newline, which would become part of the value`, `truncate -s -1 ${rel}`);
  if (!isPassword(name) && !NAME_RE.test(value)) {
    throw new UserError(
      `secret ${rel} is not a plain PostgreSQL identifier`,
      'use letters, digits and underscores, starting with a letter (at most 63)',
    );
  }
  return value;
}

export async function readSecrets(ctx: Pick<Ctx, 'fs' | 'cfg' | 'log'>): Promise<Roles> {
  const v = Object.fromEntries(await Promise.all(SECRET_NAMES.map(async (n) => [n, await readSecret(ctx, n)] as const))) as Record<
    SecretName,
    string
  >;
  for (const n of SECRET_NAMES) if (isPassword(n)) ctx.log.secret(v[n]);
  const users = [v.postgres_user, v.migrate_user, v.app_user];
  if (new Set(users).size !== 3) {
    throw new UserError(
      'postgres_user, migrate_user and app_user must be three different roles',
      'edit the files in database/infra/secrets so each names its own role',
    );
  }
  return {
    database: v.postgres_db,
    admin: { user: v.postgres_user, password: v.postgres_password },
    migrator: { user: v.migrate_user, password: v.migrate_password },
    app: { user: v.app_user, password: v.app_password },
  };
}

/** Writes a secret through a 0600 temporary file beside it; without `overwrite` an existing file is an error. */
export async function writeSecret(
  ctx: Pick<Ctx, 'fs' | 'cfg'>,
  name: SecretName | ReplicationSecretName,
  value: string,
  overwrite: boolean,
): Promise<void> {
  const file = path.join(ctx.cfg.secretsDir, name);
  const tmp = `${file}.${process.pid}.tmp`;
  await ctx.fs.writeFile(tmp, value, { mode: 0o600, flag: 'wx' });
  try {
    if (overwrite) await ctx.fs.rename(tmp, file);
    else await ctx.fs.link(tmp, file); // link fails if the file appeared meanwhile: never clobber
  } finally {
    await ctx.fs.rm(tmp, { force: true });
  }
}

export interface EnsureResult {
  created: SecretName[];
  kept: SecretName[];
}

/** Creates the missing secrets and keeps the others, unless `force`. */
export async function ensureSecrets(
  ctx: Ctx,
  opts: { force: boolean; question?: (name: SecretName, def: string) => Promise<string> },
): Promise<EnsureResult> {
  await ctx.fs.mkdir(ctx.cfg.secretsDir, { recursive: true, mode: 0o700 });
  await ctx.fs.chmod(ctx.cfg.secretsDir, 0o700);
  const res: EnsureResult = { created: [], kept: [] };
  const values: Partial<Record<SecretName, string>> = {};
  for (const name of SECRET_NAMES) {
    const exists = await ctx.fs.stat(path.join(ctx.cfg.secretsDir, name)).then(
      () => true,
      () => false,
    );
    if (exists && !opts.force) {
      res.kept.push(name);
      continue;
    }
    const def = isPassword(name) ? newPassword() : DEFAULTS[name]!;
    const value = opts.question && !isPassword(name) ? await opts.question(name, def) : def;
    if (!isPassword(name) && !NAME_RE.test(value)) {
      throw new UserError(`"${value}" is not a plain PostgreSQL identifier`, 'use letters, digits and underscores, starting with a letter');
    }
    values[name] = value;
  }
  for (const name of SECRET_NAMES) {
    const value = values[name];
    if (value === undefined) continue;
    await writeSecret(ctx, name, value, opts.force);
    res.created.push(name);
  }
  return res;
}

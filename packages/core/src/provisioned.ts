import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Ctx } from './context.ts';
import { GUARD_SCHEMA, guardBatch, osUser, recordEnvironmentSql } from './environment.ts';
import { literal, withClient, type Target } from './pg.ts';
import { driftError, provision, tryLogin, type Admin } from './provision.ts';
import { createDatabaseSql, databaseSql, ownershipSql, rolesSql, serverDatabasesSql, TCP_ROLE, type Roles } from './roles.ts';
import { SECRET_NAMES } from './secrets.ts';

/**
 * db:up on every start: provisioning, unless the server is exactly as the last provisioning left it
 * and its inputs are the same; then both logins verified over TLS and the environment recorded.
 */

const PROVISIONED = `${GUARD_SCHEMA}.provisioned`;

const PROVISIONED_SQL = `CREATE TABLE IF NOT EXISTS ${PROVISIONED} (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  fingerprint text NOT NULL,
  at timestamptz NOT NULL DEFAULT now())`;

let code: string | undefined;
/** The SQL provisioning runs, rendered for fixed names and a fixed verifier: a change to it is a change of input. */
function provisioningCode(): string {
  const r: Roles = {
    database: 'd',
    admin: { user: 'a', password: '' },
    migrator: { user: 'm', password: '' },
    app: { user: 'u', password: '' },
  };
  code ??= [rolesSql(r, () => 'verifier'), serverDatabasesSql(r), createDatabaseSql(r), ownershipSql(r), databaseSql(r)].join('\n');
  return code;
}

/** Provisioning's inputs: its SQL, the names, and the secret files as they are on disk (never their contents). */
async function inputsFingerprint(ctx: Pick<Ctx, 'cfg' | 'fs'>, r: Roles): Promise<string> {
  const h = createHash('sha256')
    .update(provisioningCode())
    .update(JSON.stringify([r.database, r.admin.user, r.migrator.user, r.app.user]));
  for (const n of SECRET_NAMES) {
    const st = await ctx.fs.stat(path.join(ctx.cfg.secretsDir, n));
    h.update(`\n${n} ${st.ino} ${st.size} ${st.mtimeMs} ${st.ctimeMs}`);
  }
  return h.digest('hex');
}

/** What provisioning establishes, as the migration role sees it from the application database: a change means drift. */
function catalogSql(r: Roles): string {
  const names = [TCP_ROLE, r.migrator.user, r.app.user].map(literal).join(', ');
  return `SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM (
  SELECT format('role %s %s %s %s %s %s %s', rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin) FROM pg_roles WHERE rolname IN (${names})
  UNION ALL SELECT format('member %s %s %s', roleid::regrole, member::regrole, admin_option) FROM pg_auth_members
    WHERE roleid IN (SELECT oid FROM pg_roles WHERE rolname IN (${names})) OR member IN (SELECT oid FROM pg_roles WHERE rolname IN (${names}))
  UNION ALL SELECT format('database %s %s %s %s', datname, datdba::regrole, datallowconn, datacl) FROM pg_database
  UNION ALL SELECT format('schema %s %s %s', nspname, nspowner::regrole, nspacl) FROM pg_namespace WHERE nspname = 'public'
  UNION ALL SELECT format('default %s %s %s %s', defaclrole::regrole, defaclnamespace::regnamespace, defaclobjtype, defaclacl) FROM pg_default_acl
) s(x)`;
}

/** The guard's record of the environment, and the table of the seal: the start of both sessions below. */
const prelude = (ctx: Pick<Ctx, 'cfg'>) => `${recordEnvironmentSql(ctx.cfg.nodeEnv, osUser(ctx.cfg.sudoUser))};\n${PROVISIONED_SQL}`;

/** This start's seal, computed by the server: the inputs' fingerprint with the catalog's digest. */
const sealSql = (r: Roles, inputs: string) => `encode(sha256(convert_to(${literal(inputs)} || ' ' || (${catalogSql(r)}), 'UTF8')), 'hex')`;

/** The migration role's one round trip: records the environment, and answers whether provisioning has nothing to do. */
async function unchanged(ctx: Pick<Ctx, 'cfg'>, r: Roles, migrator: Target, inputs: string): Promise<boolean> {
  const sql = `${prelude(ctx)};\nSELECT ${sealSql(r, inputs)} = (SELECT fingerprint FROM ${PROVISIONED})`;
  return withClient({ ...migrator, applicationName: 'pg-deploy up' }, async (c) => (await guardBatch(c, sql)).at(-1)!.rows[0][0] === true);
}

/** After provisioning, in one round trip: the environment, and the seal the next start compares with. */
async function recordProvisioned(ctx: Pick<Ctx, 'cfg'>, r: Roles, migrator: Target, inputs: string): Promise<void> {
  const sql = `${prelude(ctx)};
INSERT INTO ${PROVISIONED} (fingerprint) SELECT ${sealSql(r, inputs)}
  ON CONFLICT (only_row) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, at = now()`;
  await withClient({ ...migrator, applicationName: 'pg-deploy up' }, (c) => guardBatch(c, sql));
}

export interface Settle {
  admin: () => Promise<Admin>;
  app: Target;
  migrator: Target;
  /** The runtime's proof that the application logs in over TLS (docker waits for its published port). */
  appLogin: (t: Target) => Promise<void>;
  say: (line: string) => void;
}

/** Provisioning when anything changed, else nothing; then both logins proven and the environment recorded. */
export async function settle(ctx: Pick<Ctx, 'cfg' | 'fs'>, r: Roles, s: Settle): Promise<{ provisioned: boolean }> {
  const inputs = await inputsFingerprint(ctx, r);
  // Any failure here (no role or database yet, a refused password, drift) only means: provision, which names it.
  const [same, app] = await Promise.allSettled([unchanged(ctx, r, s.migrator, inputs), tryLogin(s.app)]);
  if (same.status === 'fulfilled' && same.value && app.status === 'fulfilled') return { provisioned: false };
  await provision(await s.admin(), r, s.say);
  await Promise.all([
    s.appLogin(s.app),
    recordProvisioned(ctx, r, s.migrator, inputs).catch((e: unknown) => {
      throw driftError(e, 'migrate', r.migrator.user) ?? e;
    }),
  ]);
  return { provisioned: true };
}

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
/** The SQL provisioning runs for fixed names, verifiers (random salts) masked: a change to it is a change of input. */
function provisioningCode(): string {
  const r: Roles = {
    database: 'd',
    admin: { user: 'a', password: 'p' },
    migrator: { user: 'm', password: 'p' },
    app: { user: 'u', password: 'p' },
  };
  code ??= [rolesSql(r), serverDatabasesSql(r), createDatabaseSql(r), ownershipSql(r), databaseSql(r)]
    .join('\n')
    .replace(/SCRAM-SHA-256\$[^']*/g, '');
  return code;
}

/** Provisioning's inputs: its SQL, the names, and the secret files as they are on disk (never their contents). */
export async function inputsFingerprint(ctx: Pick<Ctx, 'cfg' | 'fs'>, r: Roles): Promise<string> {
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
export function catalogSql(r: Roles): string {
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

const seal = (inputs: string, catalog: string) => createHash('sha256').update(`${inputs} ${catalog}`).digest('hex');

/** The migration role's one session: records the environment, and answers whether provisioning has nothing to do. */
async function unchanged(ctx: Pick<Ctx, 'cfg'>, r: Roles, migrator: Target, inputs: string): Promise<boolean> {
  const sql = `${recordEnvironmentSql(ctx.cfg.nodeEnv, osUser(ctx.cfg.sudoUser))};\n${PROVISIONED_SQL};\nSELECT (${catalogSql(r)}), (SELECT fingerprint FROM ${PROVISIONED})`;
  return withClient({ ...migrator, applicationName: 'pg-deploy up' }, async (c) => {
    const [catalog, stored] = (await guardBatch(c, sql)).at(-1)!.rows[0] as string[];
    return stored === seal(inputs, catalog);
  });
}

/** After provisioning: the environment, and the fingerprint the next start compares with. */
async function recordProvisioned(ctx: Pick<Ctx, 'cfg'>, r: Roles, migrator: Target, inputs: string): Promise<void> {
  await withClient({ ...migrator, applicationName: 'pg-deploy up' }, async (c) => {
    const [catalog] = (
      await guardBatch(c, `${recordEnvironmentSql(ctx.cfg.nodeEnv, osUser(ctx.cfg.sudoUser))};\n${PROVISIONED_SQL};\n${catalogSql(r)}`)
    ).at(-1)!.rows[0] as string[];
    await c.query(
      `INSERT INTO ${PROVISIONED} (fingerprint) VALUES ($1) ON CONFLICT (only_row) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, at = now()`,
      [seal(inputs, catalog)],
    );
  });
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

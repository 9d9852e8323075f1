import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { ident } from '../pg.ts';
import { provision, tryLogin, type Admin } from '../provision.ts';
import { readSecrets } from '../secrets.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { whileRunning } from './progress.ts';
import { ROLES, type CheckedBackup } from './store.ts';
import { restoreArgs, restoreInput, restoreJobs } from './format.ts';

// pg_dumpall writes a role name bare when it needs no quotes, else double-quoted.
const ROLE = String.raw`("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const unquote = (id: string) => (id.startsWith('"') ? id.slice(1, -1).replace(/""/g, '"') : id);

/**
 * The statements of a `pg_dumpall --roles-only` file that recreate the roles this server lacks, with
 * their memberships. Roles that exist are left exactly as they are: their passwords are the ones the
 * secret files hold now, and provisioning re-asserts the tool's own roles afterwards. GRANTED BY is
 * dropped because the grantor of the backup's cluster may not exist here.
 */
export function missingRolesSql(rolesSql: string, existing: ReadonlySet<string>): string {
  const lines = rolesSql.split('\n');
  const missing = new Set<string>();
  for (const l of lines) {
    const m = new RegExp(`^CREATE ROLE ${ROLE};$`).exec(l);
    if (m && !existing.has(unquote(m[1]))) missing.add(unquote(m[1]));
  }
  const out: string[] = [];
  for (const l of lines) {
    const own = new RegExp(`^(?:CREATE ROLE|ALTER ROLE|COMMENT ON ROLE) ${ROLE}[ ;]`).exec(l);
    if (own && missing.has(unquote(own[1]))) {
      out.push(l);
      continue;
    }
    const grant = new RegExp(`^GRANT ${ROLE} TO ${ROLE}[ ;]`).exec(l);
    if (grant && (missing.has(unquote(grant[1])) || missing.has(unquote(grant[2])))) out.push(l.replace(new RegExp(` GRANTED BY ${ROLE}`), ''));
  }
  return out.join('\n');
}

const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** Waits (at most `ms`) until nobody but us is connected to `db`, ending the other sessions. */
async function emptyDatabase(admin: Admin, db: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const rows = await admin.query(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${lit(db)} AND pid <> pg_backend_pid()`);
    if (Number(rows[0]?.[0] ?? 0) === 0) return;
    if (Date.now() > deadline) throw new UserError(`sessions on ${db} did not end within ${ms / 1000}s`, 'stop the applications that use it and run again');
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface RestoreResult {
  database: string;
  rolesCreated: number;
  ms: number;
}

/**
 * Restores a backup, already checked (checkIntegrity), as the database: the roles it needs and
 * this server lacks; pg_restore into a new database; only when that succeeded, the new database takes the old one's
 * name (connections to the old one are ended) and the old one is dropped. Then the roles' grants
 * and the database's ownership are provisioned again, and the application's own login is tried.
 * A failed pg_restore leaves the current database as it was, with or without --single-transaction.
 */
export async function restoreBackup(ctx: Ctx, rt: Runtime, b: CheckedBackup, opts: { jobs?: number } = {}): Promise<RestoreResult> {
  const t0 = performance.now();
  const jobs = restoreJobs(b.manifest, opts.jobs);
  rt.prepareTools().catch(() => {}); // the search for client tools overlaps what follows; errors resurface in pgTool
  const roles = await readSecrets(ctx);
  const db = roles.database;
  const admin = await rt.admin();
  const existing = new Set((await admin.query('SELECT rolname FROM pg_roles')).map((r) => r[0]));
  const rolesSql = missingRolesSql(await ctx.fs.readFile(path.join(b.dir, ROLES), 'utf8'), existing);
  const rolesCreated = rolesSql.split('\n').filter((l) => l.startsWith('CREATE ROLE')).length;
  if (rolesSql) {
    ctx.log.step(`creating ${rolesCreated} role(s) from the backup`);
    await admin.query(rolesSql);
  }
  const suffix = randomBytes(4).toString('hex');
  const incoming = `pgdeploy_restore_${suffix}`;
  const outgoing = `pgdeploy_replaced_${suffix}`;
  await admin.query(`CREATE DATABASE ${ident(incoming)} OWNER ${ident(roles.migrator.user)} TEMPLATE template0`);
  ctx.log.step(`restoring ${b.manifest.name} into a new database${jobs > 1 ? ` (${jobs} jobs)` : ''}`);
  const r = await whileRunning(ctx, `restoring ${b.manifest.name}`, rt.pgTool('pg_restore', restoreArgs(jobs, incoming), restoreInput(b.manifest, b.dir)));
  if (r.code !== 0) {
    await admin.query(`DROP DATABASE IF EXISTS ${ident(incoming)} WITH (FORCE)`).catch(() => {});
    throw new UserError(`pg_restore of ${b.manifest.name} failed: ${r.stderr.trim().split('\n').pop() ?? r.code}`, `${db} was left as it was; see the message above`);
  }
  const had = (await admin.query(`SELECT 1 FROM pg_database WHERE datname = ${lit(db)}`)).length > 0;
  if (had) {
    ctx.log.step(`ending the sessions on ${db} and swapping the restored database in`);
    await admin.query(`ALTER DATABASE ${ident(db)} WITH ALLOW_CONNECTIONS false`);
    try {
      await emptyDatabase(admin, db);
      // Both renames in one transaction: the name never points at no database, even if this
      // process dies between them.
      await admin.query(`BEGIN; ALTER DATABASE ${ident(db)} RENAME TO ${ident(outgoing)}; ALTER DATABASE ${ident(incoming)} RENAME TO ${ident(db)}; COMMIT`);
    } catch (e) {
      await admin.query(`ALTER DATABASE ${ident(db)} WITH ALLOW_CONNECTIONS true`).catch(() => {});
      await admin.query(`DROP DATABASE IF EXISTS ${ident(incoming)} WITH (FORCE)`).catch(() => {});
      throw e;
    }
  } else {
    try {
      await admin.query(`ALTER DATABASE ${ident(incoming)} RENAME TO ${ident(db)}`);
    } catch (e) {
      await admin.query(`DROP DATABASE IF EXISTS ${ident(incoming)} WITH (FORCE)`).catch(() => {});
      throw e;
    }
  }
  await provision(admin, roles);
  if (had) await admin.query(`DROP DATABASE IF EXISTS ${ident(outgoing)} WITH (FORCE)`);
  await tryLogin(await rt.target('app'));
  return { database: db, rolesCreated, ms: Math.round(performance.now() - t0) };
}

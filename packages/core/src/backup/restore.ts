import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { ident, literal } from '../pg.ts';
import { driftError, provision, tryLogin, type Admin } from '../provision.ts';
import { COMPLETE, INCOMING, OUTGOING, repairRestoreState, restoreStateSql } from '../restore-state.ts';
import { readSecrets } from '../secrets.ts';
import { databaseSql, ownershipSql } from '../roles.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { whileRunning } from './progress.ts';
import { ROLES } from './store.ts';
import type { CheckedBackup } from './integrity.ts';
import { scratchDatabase } from './leftovers.ts';
import { restoreArgs, restoreInput, restoreJobs } from './format.ts';
import { runTool } from './tool.ts';

// pg_dumpall writes a role name bare when it needs no quotes, else double-quoted.
const ROLE = String.raw`("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const unquote = (id: string) => (id.startsWith('"') ? id.slice(1, -1).replace(/""/g, '"') : id);

/** roles.sql's statements for the roles this server lacks, minus GRANTED BY (that grantor may be missing). */
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
    if (grant && (missing.has(unquote(grant[1])) || missing.has(unquote(grant[2]))))
      out.push(l.replace(new RegExp(` GRANTED BY ${ROLE}`), ''));
  }
  return out.join('\n');
}

const SWAP_WAIT_S = 15;

/** One transaction, so a kill commits all or none: end the sessions on `db`, rename it away, `incoming` to `db`. */
export function swapSql(db: string, incoming: string, outgoing?: string): string {
  const rename = outgoing
    ? `LOOP
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${literal(db)} AND pid <> pg_backend_pid();
    BEGIN
      EXECUTE format('ALTER DATABASE %I RENAME TO %I', ${literal(db)}, ${literal(outgoing)});
      EXIT;
    EXCEPTION WHEN object_in_use THEN
      IF clock_timestamp() > deadline THEN
        RAISE EXCEPTION 'sessions on % did not end within % s', ${literal(db)}, ${SWAP_WAIT_S} USING ERRCODE = 'object_in_use';
      END IF;
      PERFORM pg_sleep(0.1);
    END;
  END LOOP;
  `
    : '';
  return `DO $swap$ DECLARE deadline timestamptz := clock_timestamp() + interval '${SWAP_WAIT_S} seconds'; BEGIN
  ${rename}EXECUTE format('ALTER DATABASE %I RENAME TO %I', ${literal(incoming)}, ${literal(db)});
  EXECUTE format('COMMENT ON DATABASE %I IS NULL', ${literal(db)});
END $swap$`;
}

/** Puts right what an interrupted db:restore left (restore-state.ts). */
export async function repairBeforeRestore(ctx: Pick<Ctx, 'log' | 'fs' | 'cfg'>, rt: Runtime): Promise<void> {
  if (!(await rt.running())) return;
  const roles = await readSecrets(ctx);
  const admin = await rt.admin();
  try {
    await repairRestoreState(admin, roles.database, await admin.query(restoreStateSql(roles.database)), (l) => ctx.log.warn(l));
  } catch (e) {
    throw driftError(e, 'postgres', roles.admin.user) ?? e;
  }
}

export interface RestoreResult {
  database: string;
  rolesCreated: number;
  ms: number;
}

/** Drops the incoming database after a failure; one that stays is a leftover the next backup removes. */
async function dropIncoming(ctx: Pick<Ctx, 'log'>, admin: Admin, incoming: string): Promise<void> {
  await admin
    .query(`DROP DATABASE IF EXISTS ${ident(incoming)} WITH (FORCE)`)
    .catch((e) => ctx.log.warn(`could not drop ${incoming}: ${(e as Error).message}`));
}

/** Restores into a new database and swaps it in: a failure or a kill leaves the old or the restored one in place. */
export async function restoreBackup(ctx: Ctx, rt: Runtime, b: CheckedBackup, opts: { jobs?: number } = {}): Promise<RestoreResult> {
  const t0 = performance.now();
  const jobs = restoreJobs(b.manifest, opts.jobs);
  const tools = rt.prepareTools();
  tools.catch(() => {}); // awaited below; never an unhandled rejection meanwhile
  const roles = await readSecrets(ctx);
  const db = roles.database;
  const admin = await rt.admin();
  const existing = new Set((await admin.query('SELECT rolname FROM pg_roles')).map((r) => r[0]));
  await tools;
  const rolesSql = missingRolesSql(await ctx.fs.readFile(path.join(b.dir, ROLES), 'utf8'), existing);
  const rolesCreated = rolesSql.split('\n').filter((l) => l.startsWith('CREATE ROLE')).length;
  if (rolesSql) {
    ctx.log.step(`creating ${rolesCreated} role(s) from the backup`);
    await admin.query(rolesSql);
  }
  const incoming = scratchDatabase('restore');
  const outgoing = `${OUTGOING}${incoming.slice(INCOMING.length)}`;
  await admin.query(`CREATE DATABASE ${ident(incoming)} OWNER ${ident(roles.migrator.user)} TEMPLATE template0`);
  ctx.log.step(`restoring ${b.manifest.name} into a new database${jobs > 1 ? ` (${jobs} jobs)` : ''}`);
  const failure = { message: `pg_restore of ${b.manifest.name} failed`, hint: `${db} was left as it was; see the message above` };
  await whileRunning(
    ctx,
    `restoring ${b.manifest.name}`,
    runTool(rt, 'pg_restore', restoreArgs(jobs, incoming), restoreInput(b.manifest, b.dir), failure),
  ).catch(async (e) => {
    await dropIncoming(ctx, admin, incoming);
    throw e;
  });
  const had = (await admin.query(`SELECT 1 FROM pg_database WHERE datname = ${literal(db)}`)).length > 0;
  try {
    // Complete before it takes the name; then the mark that lets a later run finish the swap.
    const restored = { ...roles, database: incoming };
    await admin.query(`${ownershipSql(restored)}\n${databaseSql(restored)}`, incoming);
    await admin.query(`COMMENT ON DATABASE ${ident(incoming)} IS ${literal(COMPLETE)}`);
    ctx.log.step(had ? `ending the sessions on ${db} and swapping the restored database in` : `naming the restored database ${db}`);
    await admin.query(swapSql(db, incoming, had ? outgoing : undefined));
  } catch (e) {
    await dropIncoming(ctx, admin, incoming);
    if (/did not end within/.test((e as Error).message)) {
      throw new UserError(
        `sessions on ${db} did not end within ${SWAP_WAIT_S}s; ${db} was left as it was`,
        'stop the applications that use it and run again',
      );
    }
    throw e;
  }
  await provision(admin, roles, (l) => ctx.log.warn(l));
  if (had) await admin.query(`DROP DATABASE IF EXISTS ${ident(outgoing)} WITH (FORCE)`);
  await tryLogin(await rt.target('app'));
  return { database: db, rolesCreated, ms: Math.round(performance.now() - t0) };
}

import os from 'node:os';
import type { Client, QueryResult } from 'pg';
import type { Ctx } from './context.ts';
import { literal, withClient, type Target } from './pg.ts';

/** The guard's tables live in the database (as Rails' ar_internal_metadata), outside `public` so the app role never reaches them. */
export const GUARD_SCHEMA = 'pgdeploy';
export const PRODUCTION = 'production';

const SETUP_SQL = `CREATE SCHEMA IF NOT EXISTS ${GUARD_SCHEMA};
CREATE TABLE IF NOT EXISTS ${GUARD_SCHEMA}.environment (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  name text NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  recorded_by text NOT NULL);
CREATE TABLE IF NOT EXISTS ${GUARD_SCHEMA}.audit (
  at timestamptz NOT NULL DEFAULT now(),
  task text NOT NULL,
  environment text NOT NULL,
  os_user text NOT NULL,
  detail text NOT NULL DEFAULT '')`;

/** Creates the guard's schema and tables where they are missing. */
export async function ensureGuardTables(c: Client): Promise<void> {
  await guardBatch(c, SETUP_SQL);
}

/** Who runs this: the OS user, and the one behind sudo when there is one. */
export function osUser(sudoUser: string | undefined): string {
  const me = os.userInfo().username;
  return sudoUser && sudoUser !== me ? `${me} (sudo by ${sudoUser})` : me;
}

/** The guard's tables, then `name` recorded unless one is; production replaces any other. One batch, for sessions that do more. */
export function recordEnvironmentSql(name: string, by: string): string {
  return `${SETUP_SQL};
INSERT INTO ${GUARD_SCHEMA}.environment (name, recorded_by) VALUES (${literal(name)}, ${literal(by)})
  ON CONFLICT (only_row) DO UPDATE SET name = EXCLUDED.name, recorded_at = now(), recorded_by = EXCLUDED.recorded_by
  WHERE EXCLUDED.name = '${PRODUCTION}' AND ${GUARD_SCHEMA}.environment.name <> '${PRODUCTION}'`;
}

/** Runs a batch that creates the guard's tables; of concurrent first runs, the one that loses the CREATE retries once. */
export async function guardBatch(c: Client, sql: string): Promise<QueryResult[]> {
  const run = async () => [(await c.query({ text: sql, rowMode: 'array' })) as QueryResult | QueryResult[]].flat();
  return run().catch(run);
}

/** Records `name` (default NODE_ENV) unless one is recorded; production replaces any other. db:up and db:fresh call it. */
export async function recordEnvironment(ctx: Pick<Ctx, 'cfg'>, migrator: Target, name = ctx.cfg.nodeEnv): Promise<void> {
  await withClient({ ...migrator, applicationName: 'pg-deploy guard' }, (c) =>
    guardBatch(c, recordEnvironmentSql(name, osUser(ctx.cfg.sudoUser))),
  );
}

/** The environment recorded in the database, or undefined when none is. */
export async function recordedEnvironment(migrator: Target): Promise<string | undefined> {
  return withClient({ ...migrator, applicationName: 'pg-deploy guard' }, async (c) => {
    const has = (await c.query(`SELECT to_regclass('${GUARD_SCHEMA}.environment') IS NOT NULL AS has`)).rows[0].has;
    if (!has) return undefined;
    return (await c.query(`SELECT name FROM ${GUARD_SCHEMA}.environment`)).rows[0]?.name as string | undefined;
  });
}

import os from 'node:os';
import type { Client } from 'pg';
import type { Ctx } from './context.ts';
import { withClient, type Target } from './pg.ts';

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
  // Concurrent first runs may both CREATE; the one that loses retries once.
  await c.query(SETUP_SQL).catch(() => c.query(SETUP_SQL));
}

/** Who runs this: the OS user, and the one behind sudo when there is one. */
export function osUser(sudoUser: string | undefined): string {
  const me = os.userInfo().username;
  return sudoUser && sudoUser !== me ? `${me} (sudo by ${sudoUser})` : me;
}

/** Records `name` (default NODE_ENV) unless one is recorded; production replaces any other. db:up and db:fresh call it. */
export async function recordEnvironment(ctx: Pick<Ctx, 'cfg'>, migrator: Target, name = ctx.cfg.nodeEnv): Promise<void> {
  await withClient({ ...migrator, applicationName: 'pg-deploy guard' }, async (c) => {
    await ensureGuardTables(c);
    await c.query(
      `INSERT INTO ${GUARD_SCHEMA}.environment (name, recorded_by) VALUES ($1, $2)
       ON CONFLICT (only_row) DO UPDATE SET name = EXCLUDED.name, recorded_at = now(), recorded_by = EXCLUDED.recorded_by
       WHERE EXCLUDED.name = '${PRODUCTION}' AND ${GUARD_SCHEMA}.environment.name <> '${PRODUCTION}'`,
      [name, osUser(ctx.cfg.sudoUser)],
    );
  });
}

/** The environment recorded in the database, or undefined when none is. */
export async function recordedEnvironment(migrator: Target): Promise<string | undefined> {
  return withClient({ ...migrator, applicationName: 'pg-deploy guard' }, async (c) => {
    const has = (await c.query(`SELECT to_regclass('${GUARD_SCHEMA}.environment') IS NOT NULL AS has`)).rows[0].has;
    if (!has) return undefined;
    return (await c.query(`SELECT name FROM ${GUARD_SCHEMA}.environment`)).rows[0]?.name as string | undefined;
  });
}

import os from 'node:os';
import type { Ctx } from './context.ts';
import { withClient, type Target } from './pg.ts';

/**
 * The environment a database belongs to lives in the database itself (as Rails keeps it in
 * ar_internal_metadata), in a schema of its own owned by the migration role: outside `public`, so
 * the application role's default privileges never reach it. `db:up` records it the first time it
 * provisions a database (the first step of every deploy that touches a server, on both runtimes,
 * and before any migration exists); afterwards it only ever moves up to production, never down.
 */
export const GUARD_SCHEMA = 'pgdeploy';
export const PRODUCTION = 'production';

export const SETUP_SQL = `CREATE SCHEMA IF NOT EXISTS ${GUARD_SCHEMA};
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

/** Who runs this: the OS user, and the one behind sudo when there is one. */
export function osUser(env: Record<string, string | undefined>): string {
  const me = os.userInfo().username;
  return env.SUDO_USER && env.SUDO_USER !== me ? `${me} (sudo by ${env.SUDO_USER})` : me;
}

/** Records NODE_ENV in the database unless one is recorded; a production run upgrades it. */
export async function recordEnvironment(ctx: Pick<Ctx, 'cfg'>, migrator: Target): Promise<void> {
  await withClient({ ...migrator, applicationName: 'pg-deploy guard' }, async (c) => {
    // Concurrent first deploys may both run the CREATEs; the one that loses retries once.
    await c.query(SETUP_SQL).catch(() => c.query(SETUP_SQL));
    await c.query(
      `INSERT INTO ${GUARD_SCHEMA}.environment (name, recorded_by) VALUES ($1, $2)
       ON CONFLICT (only_row) DO UPDATE SET name = EXCLUDED.name, recorded_at = now(), recorded_by = EXCLUDED.recorded_by
       WHERE EXCLUDED.name = '${PRODUCTION}' AND ${GUARD_SCHEMA}.environment.name <> '${PRODUCTION}'`,
      [ctx.cfg.nodeEnv, osUser(ctx.cfg.env)],
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

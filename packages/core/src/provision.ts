import { UserError } from './errors.ts';
import { connect, lastResult, literal, type Target } from './pg.ts';
import { repairRestoreState, restoreStateSql } from './restore-state.ts';
import type { Ctx } from './context.ts';
import { createDatabaseSql, databaseSql, ownershipSql, rolesSql, serverDatabasesSql, type Roles } from './roles.ts';

/**
 * The superuser's channel, which never crosses TCP: the native server's Unix socket, or psql
 * inside the container. Returns each row's values as text.
 */
export interface Admin {
  query(sql: string, database?: string): Promise<string[][]>;
}

/**
 * Roles, database, ownership and default privileges, and no way into the server's own databases
 * for our logins; safe to run on every start. Two sessions (three the first time): each costs a
 * SCRAM login, so the statements travel together.
 */
export async function provision(admin: Admin, r: Roles, say: (line: string) => void): Promise<void> {
  // Before anything connects to the application database or creates an empty one in its place,
  // what an interrupted db:restore left is put right, from rows this same round trip reads.
  const state = await admin.query(`${rolesSql(r)}\n${serverDatabasesSql(r)}\n${restoreStateSql(r.database)}`);
  if (!(await repairRestoreState(admin, r.database, state, say))) await admin.query(createDatabaseSql(r));
  // ALTER DATABASE ... OWNER and GRANT ... ON DATABASE may run from inside that database.
  await admin.query(`${ownershipSql(r)}\n${databaseSql(r)}`, r.database);
}

/** The superuser over a Unix socket (native runtime). */
export function socketAdmin(socketDir: string, port: number, r: Roles): Admin {
  return {
    async query(sql, database = 'postgres') {
      const c = await connect({ host: socketDir, port, user: r.admin.user, password: r.admin.password, database, applicationName: 'pg-deploy admin' });
      try {
        const last = lastResult(await c.query({ text: sql, rowMode: 'array' })) as { rows: unknown[][] } | undefined;
        return (last?.rows ?? []).map((row: unknown[]) => row.map((v) => (v === null ? '' : String(v))));
      } finally {
        await c.end().catch(() => {});
      }
    },
  };
}

/**
 * A login failure with a stored password that no longer matches its secret file: drift, with the
 * fix, which names the file to put back. A rotation that was killed keeps the password the server
 * has in `.old` or `.new` beside it, and running it again finishes or rolls back.
 */
export function driftError(e: unknown, prefix: 'postgres' | 'migrate' | 'app', role: string): UserError | undefined {
  if ((e as { code?: string }).code !== '28P01') return undefined;
  const file = `database/infra/secrets/${prefix}_password`;
  const putBack = `put back ${file} as it was; after an interrupted pnpm db:secrets:rotate ${prefix}, run it again: it finds the password the server has (${file}.old or .new) and puts it in place`;
  return new UserError(
    `${file} no longer matches the password of role ${role} (the file changed after the role was created)`,
    prefix === 'postgres'
      ? `${putBack}; writing a new file changes nothing, as the image reads it only when the data directory is first made`
      : `${putBack}; or make the database follow the file: pnpm db:secrets:rotate ${prefix} --from-file`,
  );
}

/** Logs in as `t` and ends the session; throws the driver's error. */
export async function tryLogin(t: Target, timeoutMs = 2000): Promise<void> {
  await (await connect(t, timeoutMs)).end();
}

/**
 * db:up's promise, both roles at once; a stored password that no longer matches its file is
 * reported as drift. (`_ctx` is unused: the runtimes' calls still pass it.)
 */
export async function verifyLogins(_ctx: Pick<Ctx, 'cfg'>, r: Roles, app: Target | undefined, migrator: Target): Promise<void> {
  await Promise.all([
    app && tryLogin(app).catch((e) => {
      throw driftError(e, 'app', r.app.user) ?? e;
    }),
    tryLogin(migrator).catch((e) => {
      throw driftError(e, 'migrate', r.migrator.user) ?? e;
    }),
  ]);
}

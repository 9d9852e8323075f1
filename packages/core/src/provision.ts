import { UserError } from './errors.ts';
import { connect, lastResult, literal, type Target } from './pg.ts';
import { repairRestoreState, restoreStateSql } from './restore-state.ts';
import type { Ctx } from './context.ts';
import { createDatabaseSql, databaseSql, ownershipSql, rolesSql, serverDatabasesSql, type Roles } from './roles.ts';

/** The superuser's channel, never over TCP (a Unix socket, or psql in the container); rows as text. */
export interface Admin {
  query(sql: string, database?: string): Promise<string[][]>;
}

/** Roles, database, ownership and privileges; run on every start, in few sessions since each costs a SCRAM login. */
export async function provision(admin: Admin, r: Roles, say: (line: string) => void): Promise<void> {
  // Repair what a killed db:restore left before anything connects to the database or creates an empty one.
  const state = await admin.query(`${rolesSql(r)}\n${serverDatabasesSql(r)}\n${restoreStateSql(r.database)}`);
  if (!(await repairRestoreState(admin, r.database, state, say))) await admin.query(createDatabaseSql(r));
  // ALTER DATABASE ... OWNER and GRANT ... ON DATABASE may run from inside that database.
  await admin.query(`${ownershipSql(r)}\n${databaseSql(r)}`, r.database);
}

/** The superuser over a Unix socket (native runtime). */
export function socketAdmin(socketDir: string, port: number, r: Roles): Admin {
  return {
    async query(sql, database = 'postgres') {
      const c = await connect({
        host: socketDir,
        port,
        user: r.admin.user,
        password: r.admin.password,
        database,
        applicationName: 'pg-deploy admin',
      });
      try {
        const last = lastResult(await c.query({ text: sql, rowMode: 'array' })) as { rows: unknown[][] } | undefined;
        return (last?.rows ?? []).map((row: unknown[]) => row.map((v) => (v === null ? '' : String(v))));
      } finally {
        await c.end().catch(() => {});
      }
    },
  };
}

/** A refused password is drift between the role and its file: the error names the file and the way back. */
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

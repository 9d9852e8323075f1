import { ident, literal } from './pg.ts';

/**
 * The names and mark db:restore uses on the server, and the repair of what an interrupted restore
 * can leave. Provisioning runs the repair before it connects to the application database (or
 * creates an empty one in its place), so every db:up puts it right at no extra round trip.
 */

/** What a restored database carries until it takes the application database's name: proof that pg_restore finished. */
export const COMPLETE = 'pg-deploy: a complete restore, not yet swapped in';
export const INCOMING = 'pgdeploy_restore_';
export const OUTGOING = 'pgdeploy_replaced_';

interface SuperuserQuery {
  query(sql: string, database?: string): Promise<string[][]>;
}

/** The rows the repair decides from: the application database and the restore's own, newest first. */
export function restoreStateSql(db: string): string {
  return `SELECT datname, datallowconn::text, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database
     WHERE datname = ${literal(db)} OR datname LIKE ${literal(`${OUTGOING}%`)} OR datname LIKE ${literal(`${INCOMING}%`)} ORDER BY oid DESC`;
}

/**
 * Puts right, from `rows` (restoreStateSql's), what an interrupted db:restore can have left; each
 * repair is said in one line through `say`. Today's swap leaves none of these states, but a restore
 * killed by an older version (or by hand) can:
 * - the application database refusing connections (`datallowconn` false: the old swap set it, then
 *   ended the sessions): connections are allowed again;
 * - the application database missing while the database it was renamed to (`pgdeploy_replaced_*`)
 *   exists: that one takes its name back; or, when none does, a restored copy that pg_restore
 *   finished (marked so) takes the name. A copy without the mark may be half-restored: never used.
 * Returns whether the application database exists afterwards.
 */
export async function repairRestoreState(
  admin: SuperuserQuery,
  db: string,
  rows: string[][],
  say: (line: string) => void,
): Promise<boolean> {
  const app = rows.find((r) => r[0] === db);
  if (app) {
    if (app[1] !== 'true') {
      await admin.query(`ALTER DATABASE ${ident(db)} WITH ALLOW_CONNECTIONS true`);
      say(`repaired: database ${db} refused connections, as an interrupted db:restore left it; it accepts them again`);
    }
    return true;
  }
  const replaced = rows.find((r) => r[0].startsWith(OUTGOING));
  const back = replaced ?? rows.find((r) => r[0].startsWith(INCOMING) && r[2] === COMPLETE);
  if (!back) return false;
  await admin.query(`DO $fix$ BEGIN
  EXECUTE format('ALTER DATABASE %I RENAME TO %I', ${literal(back[0])}, ${literal(db)});
  EXECUTE format('ALTER DATABASE %I WITH ALLOW_CONNECTIONS true', ${literal(db)});
  EXECUTE format('COMMENT ON DATABASE %I IS NULL', ${literal(db)});
END $fix$`);
  say(
    replaced
      ? `repaired: database ${db} was missing after an interrupted db:restore; ${back[0]}, the database it replaced, is ${db} again`
      : `repaired: database ${db} was missing after an interrupted db:restore; ${back[0]}, which pg_restore had finished, is now ${db}`,
  );
  return true;
}

import { passwordProblem, scramVerifier } from './scram.ts';
import { ident, literal } from './pg.ts';
import { UserError } from './errors.ts';

// Least privilege: the superuser stays on the socket; over TCP only TCP_ROLE's members log in
// (pg_hba.conf); the migration role owns the database and its objects; the application role owns nothing.

export const TCP_ROLE = 'pgdeploy_tcp';

export interface Login {
  user: string;
  password: string;
}

export interface Roles {
  database: string;
  admin: Login;
  migrator: Login;
  app: Login;
}

/** The verifier for a login's password; a password psql and node-postgres could not both use is refused. */
function verifier(l: Login): string {
  const problem = passwordProblem(l.password);
  if (problem) {
    throw new UserError(
      `the password of role ${l.user} cannot be stored: ${problem}; nothing was changed`,
      "choose another password without such characters (pnpm db:secrets makes ASCII ones), put it in the role's password file " +
        'and run the command again (for a role that exists: pnpm db:secrets:rotate <role> --from-file)',
    );
  }
  return scramVerifier(l.password);
}

function createLogin(l: Login, hash: (l: Login) => string): string {
  return `IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(l.user)}) THEN
    CREATE ROLE ${ident(l.user)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
      PASSWORD ${literal(hash(l))} IN ROLE ${ident(TCP_ROLE)};
  END IF;`;
}

/**
 * The TCP group and the two logins; existing roles keep their password (a change is drift, reported).
 * `hash` is for provisioned.ts, which renders the SQL without deriving verifiers.
 */
export function rolesSql(r: Roles, hash: (l: Login) => string = verifier): string {
  return `DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(TCP_ROLE)}) THEN CREATE ROLE ${ident(TCP_ROLE)} NOLOGIN; END IF;
  ${createLogin(r.migrator, hash)}
  ${createLogin(r.app, hash)}
END $$;`;
}

/** Idempotent: PUBLIC may no longer connect to or make temporary tables in `postgres` and `template1`. */
export function serverDatabasesSql(r: Roles): string {
  return `DO $$ DECLARE d text; BEGIN
  FOR d IN SELECT datname FROM pg_database WHERE datname IN ('postgres', 'template1') AND datname <> ${literal(r.database)} LOOP
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', d);
  END LOOP;
END $$;`;
}

/** Creates the application database, owned by the migration role (CREATE DATABASE cannot run in a DO block). */
export function createDatabaseSql(r: Roles): string {
  return `CREATE DATABASE ${ident(r.database)} OWNER ${ident(r.migrator.user)}`;
}

/** Idempotent: the database belongs to the migration role, and only our roles may connect. */
export function ownershipSql(r: Roles): string {
  return `ALTER DATABASE ${ident(r.database)} OWNER TO ${ident(r.migrator.user)};
REVOKE ALL ON DATABASE ${ident(r.database)} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE ${ident(r.database)} TO ${ident(r.migrator.user)}, ${ident(r.app.user)};`;
}

/** In the application database: what the app may do with what migrations make. */
export function databaseSql(r: Roles): string {
  const m = ident(r.migrator.user);
  const a = ident(r.app.user);
  return `REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ${a};
ALTER DEFAULT PRIVILEGES FOR ROLE ${m} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${a};
ALTER DEFAULT PRIVILEGES FOR ROLE ${m} IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO ${a};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${a};
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ${a};`;
}

export function passwordSql(l: Login): string {
  return `ALTER ROLE ${ident(l.user)} PASSWORD ${literal(verifier(l))}`;
}

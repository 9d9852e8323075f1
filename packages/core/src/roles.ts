import { scramVerifier } from './scram.ts';
import { ident } from './pg.ts';

/**
 * Least privilege. The image's POSTGRES_USER is a superuser: it stays on the server's own socket.
 * Over TCP only members of TCP_ROLE may log in (pg_hba.conf: `hostssl all +pgdeploy_tcp`); a
 * superuser is not a member merely by being one, so it is refused over TCP.
 * - the migration role owns the database (so, in PostgreSQL 15+, its `public` schema) and every
 *   object migrations create; it is not a superuser and cannot create roles or databases;
 * - the application role reads and writes what the migration role creates, through default
 *   privileges, and owns nothing.
 */
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

function lit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

function createLogin(l: Login): string {
  return `IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${lit(l.user)}) THEN
    CREATE ROLE ${ident(l.user)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
      PASSWORD ${lit(scramVerifier(l.password))} IN ROLE ${ident(TCP_ROLE)};
  END IF;`;
}

/**
 * Idempotent SQL, run as the superuser: the TCP group and the two login roles, created with their
 * SCRAM verifiers, never the password. Existing roles keep their password: a secret changed
 * afterwards is drift, reported by db:up and db:doctor, not silently applied.
 */
export function rolesSql(r: Roles): string {
  return `DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${lit(TCP_ROLE)}) THEN CREATE ROLE ${ident(TCP_ROLE)} NOLOGIN; END IF;
  ${createLogin(r.migrator)}
  ${createLogin(r.app)}
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

/** Idempotent SQL, run as the superuser in the application database: what the app may do with what migrations make. */
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

/** Sets a role's password, as a verifier. */
export function passwordSql(l: Login): string {
  return `ALTER ROLE ${ident(l.user)} PASSWORD ${lit(scramVerifier(l.password))}`;
}

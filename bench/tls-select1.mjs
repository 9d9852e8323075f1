// The floor for a task that talks to the database: a node process that loads `pg`, opens one
// verified TLS connection and runs `select 1`. It reads libpq's variables (PGHOST, PGPORT, PGUSER,
// PGDATABASE, PGPASSWORD, PGSSLROOTCERT) so no secret is ever in argv. Used by bench/*.ts only.
import { readFileSync } from 'node:fs';
import pg from 'pg';

const env = process.env;
const client = new pg.Client({
  host: env.PGHOST,
  port: Number(env.PGPORT),
  user: env.PGUSER,
  password: env.PGPASSWORD,
  database: env.PGDATABASE,
  connectionTimeoutMillis: 10_000,
  // `host` makes Node verify the certificate against PGHOST (an IP SAN), as libpq's verify-full does.
  ssl: { ca: readFileSync(env.PGSSLROOTCERT, 'utf8'), rejectUnauthorized: true, host: env.PGHOST },
});
await client.connect();
const { rows } = await client.query('select 1 as ok');
await client.end();
if (rows[0].ok !== 1) process.exit(1);

// Set-up for the backup, restore, retention, guard and seed tests: projects on Debian's binaries, a
// filled shop database and its snapshot, the backup folder's state.
import { existsSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { connect, withClient } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { CLI, appTarget, makeProject, ownerTarget, readSecretFile, run, type CliResult, type Project } from './project.ts';

/**
 * Debian's own server and client binaries, whose majors match, so pg_dump can dump the server.
 * The major is discovered (15 on Debian 12, 17 on Debian 13), never assumed: the newest that has
 * every program of `needs` (the benchmarks name what they run).
 */
export function debianMajor(needs: readonly string[] = ['postgres', 'pg_dump']): number {
  const root = '/usr/lib/postgresql';
  const majors = (existsSync(root) ? readdirSync(root) : [])
    .filter((d) => /^\d+$/.test(d) && needs.every((b) => existsSync(path.join(root, d, 'bin', b))))
    .map(Number)
    .sort((a, b) => b - a);
  if (!majors.length)
    throw new Error(`no PostgreSQL binaries with ${needs.join(', ')} under /usr/lib/postgresql (apt-get install postgresql)`);
  return majors[0];
}

export const debianBin = (needs?: readonly string[]) => `/usr/lib/postgresql/${debianMajor(needs)}/bin`;

/** A project on Debian's binaries, with its own backup folder. */
export async function backupProject(opts: { migrations?: Record<string, string>; embedded?: boolean } = {}): Promise<Project> {
  const p = await makeProject(opts.migrations ? { migrations: opts.migrations } : {});
  p.env.DB_BACKUP_DIR = path.join(p.dir, 'backups');
  if (!opts.embedded) p.env.PG_BIN_DIR = debianBin();
  return p;
}

/** The superuser on the native server's socket: for what the test sets up and inspects, never for the tool. */
export async function superuser(p: Project, database?: string) {
  return {
    host: nativePaths(p.nativeDir).run,
    port: p.port,
    user: await readSecretFile(p, 'postgres_user'),
    password: await readSecretFile(p, 'postgres_password'),
    database: database ?? (await readSecretFile(p, 'postgres_db')),
  };
}

/** Every role logs in with what its file holds now: app and schema owner over verified TLS, the superuser on the socket. */
export async function everyRoleLogsIn(p: Project): Promise<void> {
  for (const t of [await appTarget(p), await ownerTarget(p), await superuser(p, 'postgres')]) await (await connect(t, 5000)).end();
}

export async function suQuery(p: Project, sql: string, database?: string): Promise<Record<string, unknown>[]> {
  return withClient(await superuser(p, database), async (c) => (await c.query(sql)).rows);
}

export async function ownerQuery(p: Project, sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  return withClient(await ownerTarget(p), async (c) => (await c.query(sql, params)).rows);
}

/**
 * Several tables with a foreign key, a sequence, an index, a function, a view and a role of its own
 * with a grant: made by the schema owner, the role by the superuser. Needs the first migration (accounts).
 */
export async function fillShop(p: Project): Promise<void> {
  await suQuery(p, 'CREATE ROLE reporting NOLOGIN');
  await ownerQuery(
    p,
    `
    CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts(id), placed_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE order_lines (order_id bigint NOT NULL REFERENCES orders(id), sku text NOT NULL, qty int NOT NULL CHECK (qty > 0), price numeric(10,2) NOT NULL);
    CREATE INDEX order_lines_sku ON order_lines (sku);
    CREATE TABLE notes (id serial PRIMARY KEY, body text);
    CREATE SEQUENCE invoice_no START 1000;
    CREATE FUNCTION order_total(o bigint) RETURNS numeric LANGUAGE sql STABLE AS $$ SELECT coalesce(sum(qty * price), 0) FROM order_lines WHERE order_id = o $$;
    CREATE VIEW big_orders AS SELECT order_id, sum(qty * price) AS total FROM order_lines GROUP BY order_id HAVING sum(qty * price) > 100;
    GRANT SELECT ON orders, order_lines TO reporting;
    INSERT INTO accounts (email) SELECT 'user' || i || '@example.com' FROM generate_series(1, 300) i;
    INSERT INTO orders (account_id) SELECT 1 + (i % 300) FROM generate_series(1, 1000) i;
    INSERT INTO order_lines SELECT 1 + (i % 1000), 'sku-' || (i % 37), 1 + (i % 5), (i % 97) + 0.5 FROM generate_series(1, 5000) i;
    INSERT INTO notes (body) VALUES ('tab	and newline
inside'), (NULL), ('quote '' and backslash \\');
    SELECT nextval('invoice_no') FROM generate_series(1, 42);`,
  );
}

/** What must survive a backup and restore: row counts and contents per table, a sequence, the schema dump. */
export async function shopSnapshot(p: Project) {
  const tables = ['public.accounts', 'public.orders', 'public.order_lines', 'public.notes'];
  const data: Record<string, unknown> = {};
  for (const t of tables) {
    const [r] = await suQuery(
      p,
      `SELECT count(*)::int AS n, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS sum FROM ${t} x`,
    );
    data[t] = r;
  }
  data.sequence = (await suQuery(p, 'SELECT last_value, is_called FROM public.invoice_no'))[0];
  data.function = (await suQuery(p, 'SELECT public.order_total(1) AS total'))[0];
  // pg_dump's own view of the schema, as the superuser on the socket: independent of the tool's fingerprint.
  const su = await superuser(p);
  const schema = execFileSync(path.join(debianBin(), 'pg_dump'), ['--schema-only', su.database], {
    env: { ...process.env, PGHOST: su.host, PGPORT: String(su.port), PGUSER: su.user, PGPASSWORD: su.password },
  })
    .toString()
    .replace(/^\\(un)?restrict .*$/gm, ''); // pg_dump 17's per-run random key
  return { data, schema };
}

/** Finished backups (directories with a manifest) and anything else left in the backup folder. */
export async function backupDirState(p: Project): Promise<{ finished: string[]; other: string[] }> {
  const dir = p.env.DB_BACKUP_DIR;
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const finished: string[] = [];
  const other: string[] = [];
  for (const n of names) {
    if (n === 'audit.log') continue;
    const hasManifest = await fs.stat(path.join(dir, n, 'manifest.json')).then(
      () => true,
      () => false,
    );
    (hasManifest && !n.startsWith('.') ? finished : other).push(n);
  }
  return { finished: finished.sort(), other: other.sort() };
}

/** No finished backup and nothing else (a temporary leftover) in the backup folder. */
export async function nothingLeft(p: Project): Promise<void> {
  const s = await backupDirState(p);
  assert.equal(s.finished, [], `no finished backup: ${s.finished.join(', ')}`);
  assert.equal(s.other, [], `no temporary leftovers: ${s.other.join(', ')}`);
}

/** Runs the CLI as another user (to meet permissions root ignores), with no terminal. */
export function cliAs(uid: number, gid: number, args: string[], env: Record<string, string | undefined>): Promise<CliResult> {
  return run(process.execPath, [CLI, ...args], { HOME: '/tmp', ...env }, { cwd: '/', asUser: { uid, gid } });
}

/** Flips one byte in the middle of a file. */
export async function flipByte(file: string): Promise<void> {
  const buf = await fs.readFile(file);
  const i = Math.floor(buf.length / 2);
  buf[i] ^= 0xff;
  await fs.writeFile(file, buf);
}

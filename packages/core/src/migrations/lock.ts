import type { Client } from 'pg';
import { UserError } from '../errors.ts';
import { VERSION_TABLE, type MigrationTables } from './state.ts';

// golang-migrate's key (database/util.go, v4.15.0+; older images use another), so both runners
// exclude each other: crc32 of `schema NUL table NUL /dbname` times this salt, in uint32.
const SALT = 1486364155;

let table: Uint32Array | undefined;
function crc32(bytes: Uint8Array): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of bytes) crc = table[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** golang-migrate's GenerateAdvisoryLockId, same arguments, same order (Node's zlib has crc32 only from 22). */
export function generateAdvisoryLockId(databaseName: string, ...additionalNames: string[]): number {
  const text = additionalNames.length ? [...additionalNames, databaseName].join('\0') : databaseName;
  return Math.imul(crc32(new TextEncoder().encode(text)), SALT) >>> 0;
}

/** The key golang-migrate's CLI takes for `dbname` (the URL path, with its slash: "/app"). */
export function advisoryLockKey(dbname: string, schema = 'public', migrationsTable = VERSION_TABLE): number {
  return generateAdvisoryLockId(dbname, schema, migrationsTable);
}

export const lockKeyOf = (t: Pick<MigrationTables, 'database' | 'schema'>): number => advisoryLockKey('/' + t.database, t.schema);

/** Who holds the migration lock, in words (never the text of their query). */
async function lockHolder(c: Client, key: number): Promise<string> {
  const { rows } = await c.query(
    `SELECT a.pid, a.application_name AS app, a.usename AS usr, a.client_addr AS addr, a.backend_start AS since,
            a.state, a.state_change AS state_since
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1::bigint::oid AND l.objsubid = 1`,
    [key],
  );
  if (!rows.length) return 'a session that has ended since';
  const r = rows[0];
  const iso = (d: Date) => new Date(d).toISOString();
  // Hidden outside pg_read_all_stats; our own runners put the time in their application name.
  const when = r.since ? `, connected since ${iso(r.since)}, ${r.state} since ${iso(r.state_since)}` : '';
  return `pid ${r.pid}, application "${r.app || ''}", user ${r.usr}${r.addr ? ` from ${r.addr}` : ''}${when}`;
}

/** A lock holder's application name: since when, for whoever waits. */
export function holderName(now: Date): string {
  return `pg-deploy migrate, lock held since ${now.toISOString().slice(0, 19)}Z`;
}

/**
 * Takes golang-migrate's session-level advisory lock, waiting at most `timeoutMs`. It polls: a waiter
 * blocked in pg_advisory_lock holds a snapshot, which the holder's CREATE INDEX CONCURRENTLY waits for.
 */
export async function acquireLock(c: Client, key: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
    const { rows } = await c.query(`SELECT pg_try_advisory_lock(${key}) AS ok`);
    if (rows[0].ok) return;
    const left = deadline - Date.now();
    if (left <= 0) break;
    await new Promise((r) => setTimeout(r, Math.min(pause, left)));
  }
  throw new UserError(
    `another migration has held the migration lock (key ${key}) for more than ${timeoutMs / 1000}s: ${await lockHolder(c, key)}`,
    'wait for it to finish, or end that session (SELECT pg_terminate_backend(pid)); raise DB_MIGRATE_LOCK_TIMEOUT to wait longer',
  );
}

export async function releaseLock(c: Client, key: number): Promise<void> {
  await c.query(`SELECT pg_advisory_unlock(${key})`).catch(() => {}); // a lost connection has let it go already
}

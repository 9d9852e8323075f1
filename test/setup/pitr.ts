import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { withClient } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { appTarget, type Project } from './project.ts';
import { ownerQuery, suQuery } from './backup.ts';

// What the point-in-time recovery tests read and write, natively and on docker (a DockerProject is a Project).

export const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every row of `table`, as the application reads it over verified TLS: their count and a digest. */
export async function tableDigest(p: Project, table: string): Promise<string> {
  return withClient(await appTarget(p), async (c) => {
    const r = await c.query(`SELECT count(*) || ':' || md5(string_agg(x::text, '|' ORDER BY x::text)) AS s FROM ${table} x`);
    return String(r.rows[0].s);
  });
}

/** The rows of `notes` with this body, as the schema owner reads them. */
export const countNotes = async (p: Project, body: string): Promise<number> =>
  Number((await ownerQuery(p, 'SELECT count(*)::int AS n FROM notes WHERE body = $1', [body]))[0].n);

/** A few finished segments with writes in them; `switchWal` runs `SELECT pg_switch_wal()` as the superuser (native by default). */
export async function writeSegments(p: Project, n: number, switchWal = (sql: string): Promise<unknown> => suQuery(p, sql)): Promise<void> {
  for (let i = 0; i < n; i++) {
    await ownerQuery(p, `INSERT INTO notes (body) SELECT 'filler' FROM generate_series(1, 100)`);
    await switchWal('SELECT pg_switch_wal()');
  }
}

/** An identity of the native data directory: replaced, it changes. */
export async function dataId(p: Project): Promise<string> {
  const data = await fs.realpath(nativePaths(p.nativeDir).data);
  const st = await fs.stat(path.join(data, 'PG_VERSION'));
  return `${data}:${st.ino}`;
}

/** db:backup --physical --json's backup: named so, private (0700, its files 0600), a physical manifest on timeline 1, returned. */
export async function physicalBackup(out: { name: string; backup: string }): Promise<{ kind: string; runtime: string; timeline: number }> {
  assert.match(out.name, /^app-\d{8}T\d{6}Z-physical$/);
  assert.is((await fs.stat(out.backup)).mode & 0o777, 0o700);
  for (const f of ['base.tar', 'pg_wal.tar', 'backup_manifest', 'manifest.json'])
    assert.is((await fs.stat(path.join(out.backup, f))).mode & 0o777, 0o600, f);
  const m = JSON.parse(await fs.readFile(path.join(out.backup, 'manifest.json'), 'utf8'));
  assert.is(m.kind, 'physical');
  assert.is(m.timeline, 1);
  return m;
}

/**
 * Five notes inserted at t1 and deleted at t2, with every row of `table` (a bad DELETE beside it), then
 * three segments archived: `target` is a moment between, as the server's UTC text, and `before` the
 * digest of `table` before it all. `switchWal` as for writeSegments.
 */
export async function insertThenDelete(
  p: Project,
  table: string,
  switchWal?: (sql: string) => Promise<unknown>,
): Promise<{ before: string; target: string }> {
  const before = await tableDigest(p, table);
  await pause(1100);
  await ownerQuery(p, `INSERT INTO notes (body) SELECT 'inserted at t1' FROM generate_series(1, 5)`); // t1
  await pause(1100);
  const [{ t }] = await ownerQuery(p, `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS t`);
  await pause(1100);
  await ownerQuery(p, `DELETE FROM notes WHERE body = 'inserted at t1'`); // t2, and a bad DELETE beside it
  await ownerQuery(p, `DELETE FROM ${table}`);
  await writeSegments(p, 3, switchWal);
  assert.is(await countNotes(p, 'inserted at t1'), 0);
  return { before, target: String(t) };
}

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

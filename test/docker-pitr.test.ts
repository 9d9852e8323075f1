import * as assert from 'uvu/assert';
import { failsClearly } from './setup/assert.ts';
import { ownerQuery } from './setup/backup.ts';
import { cli, compose, dbShell, engineSuite, ok, withStartedDockerProject, type DockerProject } from './setup/docker.ts';
import { setUp } from './setup/hooks.ts';
import { countNotes, insertThenDelete, pause, physicalBackup, tableDigest, writeSegments } from './setup/pitr.ts';

// Point-in-time recovery on the Compose runtime, through the real api-db container: WAL archived into
// the pg_wal_archive volume, db:backup --physical (pg_basebackup inside api-db), db:restore --to-time
// (the data volume replaced by one-off containers, replayed, promoted, provisioned) and its refusal
// of a gap in the archive, with the data untouched.

interface Ctx {
  p?: DockerProject;
  base?: string;
  target?: string;
  before?: string;
}

const ARCHIVE = '/var/lib/postgresql/archive';
const inDb = dbShell;

/** SQL as the superuser on api-db's socket (db-admin-sql: the password stays in the container); rows of fields. */
async function su(p: DockerProject, sql: string): Promise<string[][]> {
  const r = await compose(p, ['exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql', 'app'], { input: sql });
  assert.is(r.code, 0, r.stderr);
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\x1f'));
}

/** The segments in the archive volume. */
const archived = async (p: DockerProject) =>
  (await inDb(p, `ls -A ${ARCHIVE}/wal 2>/dev/null || :`))
    .split('\n')
    .filter((n) => /^[0-9A-F]{24}$/.test(n))
    .sort();

/** An identity of the data directory (the inode of PG_VERSION): replaced, it changes. */
const dataId = (p: DockerProject) => inDb(p, 'stat -c %i "$PGDATA/PG_VERSION"');
/** What lies beside PGDATA in the data volume (a recovery's set-aside copy would). */
const besideData = (p: DockerProject) => inDb(p, 'ls -A /var/lib/postgresql/data');
/** Finished segments with writes in them, switched by the superuser in api-db. */
const writeSegs = (p: DockerProject, n: number) => writeSegments(p, n, (sql) => su(p, sql));

const pitr = engineSuite<Ctx>('point-in-time recovery on docker replays the archive volume onto a base backup');

if (pitr) {
  withStartedDockerProject(pitr); // after it: down --volumes, the archive volume with the data's
  setUp(pitr, async (ctx) => {
    await ok(['db:migrate'], ctx.p!.env);
    await ownerQuery(
      ctx.p!,
      `CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts(id), total numeric(10,2) NOT NULL);
       CREATE TABLE notes (id serial PRIMARY KEY, body text);
       INSERT INTO accounts (email) SELECT 'p' || i || '@example.com' FROM generate_series(1, 200) i;
       INSERT INTO orders (account_id, total) SELECT 1 + (i % 200), (i % 89) + 0.5 FROM generate_series(1, 2000) i;`,
    );
  });

  pitr('before the first base backup the archive keeps nothing: segments are recycled, none piles up', async (ctx) => {
    const p = ctx.p!;
    const [[mode, command]] = await su(p, `SELECT current_setting('archive_mode'), current_setting('archive_command')`);
    assert.is(mode, 'on');
    assert.match(command, /db-wal-archive '\/var\/lib\/postgresql\/archive\/wal' %p %f/);
    await writeSegs(p, 2);
    let done = 0;
    for (let i = 0; i < 100 && done < 2; i++, await pause(100))
      done = Number((await su(p, 'SELECT archived_count FROM pg_stat_archiver'))[0][0]);
    assert.ok(done >= 2, 'the archive command ran and succeeded');
    assert.is(await inDb(p, `ls -A ${ARCHIVE}`), '', 'and kept nothing: the volume is empty');
    failsClearly(await cli(['db:restore', '--to-time', '2026-01-01 00:00:00', '--yes'], p.env), /no base backup in/, {
      hint: /db:backup --physical/,
    });
  });

  pitr('db:backup --physical takes the base backup inside api-db, private, and arms the archive volume', async (ctx) => {
    const p = ctx.p!;
    const out = JSON.parse((await ok(['db:backup', '--physical', '--json'], p.env)).stdout);
    ctx.base = out.name;
    assert.is((await physicalBackup(out)).runtime, 'docker');
    assert.is(await inDb(p, `stat -c '%U %a' ${ARCHIVE}/wal`), 'postgres 700');
    await writeSegs(p, 1);
    for (let i = 0; i < 100 && !(await archived(p)).length; i++) await pause(100);
    assert.ok((await archived(p)).length > 0, 'a segment was archived');
    assert.is(await inDb(p, 'ls -A "${TMPDIR:-/tmp}"'), '', "the container's temporary copy is gone");
  });

  pitr('rows inserted at t1 and deleted at t2 are back after a restore to a time between; a gap is refused first', async (ctx) => {
    const p = ctx.p!;
    ({ before: ctx.before, target: ctx.target } = await insertThenDelete(p, 'orders', (sql) => su(p, sql)));

    // A segment missing from the middle of the archive: refused, with nothing touched.
    const segs = await archived(p);
    const gone = segs[Math.floor(segs.length / 2)];
    assert.ok(segs.indexOf(gone) < segs.length - 1, 'the gap is inside the archive');
    const id = await dataId(p);
    const beside = await besideData(p);
    await inDb(p, `mv ${ARCHIVE}/wal/${gone} ${ARCHIVE}/held-${gone}`);
    failsClearly(await cli(['db:restore', '--to-time', ctx.target, '--yes'], p.env), new RegExp(`missing segment ${gone}`), {
      hint: /db:backup --physical/,
    });
    assert.is(await dataId(p), id, 'the data directory is the same');
    assert.is(await besideData(p), beside, 'nothing was set aside');
    assert.is(await countNotes(p, 'inserted at t1'), 0, 'the server still runs, with its data as it was');
    await inDb(p, `mv ${ARCHIVE}/held-${gone} ${ARCHIVE}/wal/${gone}`);

    const out = JSON.parse((await ok(['db:restore', '--to-time', ctx.target, '--yes', '--json'], p.env)).stdout);
    process.stderr.write(`docker point-in-time recovery: ${out.segments} segment(s), ${out.ms} ms (db:restore's own figure)\n`);
    assert.is(out.base, ctx.base);
    assert.match(out.stopped, /recovery stopping before commit/);
    assert.is(out.timeline, 2);
    assert.is(await countNotes(p, 'inserted at t1'), 5, 'the rows of t1 are back');
    assert.is(await tableDigest(p, 'orders'), ctx.before, 'everything committed before t1 is there');
    assert.is.not(await dataId(p), id, 'the data directory was replaced');
    assert.is(await besideData(p), beside, 'the old one is gone once recovery succeeded');
    assert.equal(await su(p, `SELECT name FROM pg_file_settings WHERE name LIKE 'recovery_target%' OR name = 'restore_command'`), []);
    assert.is(await inDb(p, 'test -e "$PGDATA/recovery.signal" && echo yes || echo no'), 'no');
    // The new timeline archives into the same volume: its history file is there.
    for (let i = 0; i < 100 && !(await inDb(p, `ls ${ARCHIVE}/wal`)).includes('00000002.history'); i++) await pause(100);
    assert.match(await inDb(p, `ls ${ARCHIVE}/wal`), /00000002\.history/);
  });

  pitr('a recovery that fails once api-db replays puts the old data back and starts it again', async (ctx) => {
    const p = ctx.p!;
    await ownerQuery(p, `INSERT INTO notes (body) VALUES ('kept through a failed recovery')`);
    // A target in the current segment, near its end: db:restore archives that segment (a commit, then a
    // switch), so the checks pass, but no record reaches the target: the server stops with a FATAL.
    const [[lsn]] = await su(p, 'SELECT pg_current_wal_lsn()::text');
    const [hi, lo] = lsn.split('/').map((h) => BigInt(`0x${h}`));
    const seg = 16n * 1024n * 1024n;
    const target = (((hi << 32n) | lo) / seg + 1n) * seg - 4096n;
    const text = `${(target >> 32n).toString(16).toUpperCase()}/${(target & 0xffffffffn).toString(16).toUpperCase()}`;
    const id = await dataId(p);
    const beside = await besideData(p);
    const r = await cli(['db:restore', '--to-lsn', text, '--yes'], p.env);
    const said = failsClearly(
      r,
      /the recovery failed: .*FATAL: +recovery ended before configured recovery target was reached; the data directory is back as it was/,
    );
    assert.not.match(said.error, /\x1b/, 'no terminal escapes from compose logs');
    assert.is(await dataId(p), id, 'the same data directory');
    assert.is(await besideData(p), beside, 'nothing left aside');
    assert.is(await countNotes(p, 'kept through a failed recovery'), 1, 'api-db runs again, with its data, over TLS');
  });

  pitr.run();
}

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { backupProject, fillShop, ownerQuery, suQuery } from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';
import { cli, ok, removeProject, run, ROOT, startProject, type Project } from './setup/project.ts';
import { until } from './setup/engine.ts';
import { countNotes, dataId, insertThenDelete, pause, physicalBackup, tableDigest, writeSegments } from './setup/pitr.ts';
import os from 'node:os';
import { checkArchive, parseSegment, parseTime, segmentName } from '@dbkit/core/backup/wal';

// Point-in-time recovery on the native server (Debian's binaries, so pg_basebackup matches it):
// WAL archiving, db:backup --physical, db:restore --to-time / --to-lsn, and their refusals.

interface Ctx {
  p?: Project;
  base?: string;
  target?: string;
  before?: string;
}

/** Segments in the WAL archive (the folder DB_WAL_ARCHIVE_DIR names, or links to). */
async function archived(p: Project): Promise<string[]> {
  const dir = await fs.realpath(path.join(p.env.DB_BACKUP_DIR, 'wal'));
  return (await fs.readdir(dir)).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
}

const pitr = suite<Ctx>('point-in-time recovery replays the WAL archive onto a base backup');

setUp(pitr, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p, { migrate: [] });
  await fillShop(ctx.p);
});

pitr.after(async (ctx) => {
  // As root the archive is the server user's folder outside the project (wal-native.ts), linked from it.
  const archive = ctx.p && (await fs.realpath(path.join(ctx.p.env.DB_BACKUP_DIR, 'wal')).catch(() => undefined));
  await removeProject(ctx.p);
  if (archive) await fs.rm(archive, { recursive: true, force: true });
});

pitr('bad targets are refused with one clear line before anything is touched', async (ctx) => {
  const p = ctx.p!;
  const id = await dataId(p);
  failsClearly(await cli(['db:restore', '--to-time', 'last tuesday', '--yes'], p.env), /--to-time must be a date and time/, { code: 2 });
  failsClearly(await cli(['db:restore', '--to-time', '2026-13-45 25:00:00', '--yes'], p.env), /--to-time must be a date and time/, {
    code: 2,
  });
  failsClearly(await cli(['db:restore', '--to-lsn', 'zz/1', '--yes'], p.env), /--to-lsn must be a WAL location/, { code: 2 });
  failsClearly(await cli(['db:restore', '--to-lsn', '0/1', '--to-time', '2026-01-01 00:00', '--yes'], p.env), /give one/, { code: 2 });
  failsClearly(await cli(['db:restore', '--to-time', '2026-01-01 00:00:00', '--yes'], p.env), /no base backup in/, {
    hint: /db:backup --physical/,
  });
  assert.is(await dataId(p), id, 'the data directory is the same');
});

pitr('db:backup --physical writes a tar base backup with both manifests, private, and arms the WAL archive', async (ctx) => {
  const p = ctx.p!;
  const r = await ok(['db:backup', '--physical', '--json'], p.env);
  const out = JSON.parse(r.stdout);
  ctx.base = out.name;
  assert.match(out.startLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
  const dir = out.backup as string;
  assert.is((await physicalBackup(out)).runtime, 'native');
  assert.ok(
    JSON.parse(await fs.readFile(path.join(dir, 'backup_manifest'), 'utf8')).Files.some(
      (f: { Checksum?: string; 'Checksum-Algorithm'?: string }) => f['Checksum-Algorithm'] === 'SHA256',
    ),
  );
  // The archive is armed: a finished segment lands in it, and the copy is the server user's.
  await writeSegments(p, 1);
  for (let i = 0; i < 100 && !(await archived(p)).length; i++) await pause(100);
  assert.ok((await archived(p)).length > 0, 'a segment was archived');
  // A logical db:restore does not take it for one of its backups.
  failsClearly(await cli(['db:restore', '--yes'], p.env), /no backup in/);
});

/** db:doctor's WAL archiving check, and its exit code. */
async function archivingCheck(p: Project): Promise<{ code: number; status: string; detail: string }> {
  const r = await cli(['db:doctor', '--json'], p.env);
  const c = (JSON.parse(r.stdout).checks as { name: string; status: string; detail: string }[]).find((x) => x.name === 'WAL archiving');
  assert.ok(c, r.stdout);
  return { code: r.code, status: c.status, detail: c.detail };
}

pitr(
  'armed, a missing archive folder stops archiving loudly: the segment stays in pg_wal, db:doctor fails; back, it is archived',
  async (ctx) => {
    const p = ctx.p!;
    const data = await fs.realpath(nativePaths(p.nativeDir).data);
    assert.ok(await fs.stat(path.join(data, 'pg-deploy.wal-armed')), 'db:backup --physical armed the cluster');
    const base = path.join(p.env.DB_BACKUP_DIR, ctx.base!, 'base.tar');
    assert.match((await run('tar', ['-tf', base], {})).stdout, /^(\.\/)?pg-deploy\.wal-armed$/m, 'and the base backup holds the mark');
    const healthy = await archivingCheck(p);
    assert.is(healthy.status, 'ok', healthy.detail);
    assert.match(healthy.detail, /^armed, into .*; newest archived segment [0-9A-F]{24}, \d+ min old/);

    const dir = await fs.realpath(path.join(p.env.DB_BACKUP_DIR, 'wal'));
    const failures = async () => Number((await suQuery(p, 'SELECT failed_count::int AS n FROM pg_stat_archiver'))[0].n);
    const before = await failures();
    await fs.rename(dir, `${dir}.unmounted`);
    try {
      await writeSegments(p, 1);
      await until('the archiver to fail', 30_000, async () => (await failures()) > before);
      const wal = String((await suQuery(p, 'SELECT last_failed_wal AS wal FROM pg_stat_archiver'))[0].wal);
      const inPgWal = (await suQuery(p, 'SELECT name FROM pg_ls_waldir()')).map((r) => r.name);
      assert.ok(inPgWal.includes(wal), `${wal} is kept in pg_wal`);
      assert.not.ok(await fs.stat(dir).catch(() => undefined), 'the script made no folder in its place');
      assert.match(
        await fs.readFile(nativePaths(p.nativeDir).log, 'utf8'),
        /wal-archive: the archive folder .* is missing, but this cluster's archive is armed/,
      );
      const failing = await archivingCheck(p);
      assert.is(failing.status, 'fail', failing.detail);
      assert.match(failing.detail, new RegExp(`^archiving fails: ${wal} failed .* wait in pg_wal, which grows`));
      assert.is(failing.code, 1, 'db:doctor exits non-zero');
    } finally {
      await fs.rename(`${dir}.unmounted`, dir);
    }
    const wal = String((await suQuery(p, 'SELECT last_failed_wal AS wal FROM pg_stat_archiver'))[0].wal);
    await writeSegments(p, 1); // a new segment wakes the archiver, which retries the kept one first
    await until(`${wal} to reach the archive`, 30_000, async () => (await archived(p)).includes(wal));
    assert.is((await archivingCheck(p)).status, 'ok');
  },
);

pitr('rows inserted at t1 and deleted at t2 are back after a restore to a time between', async (ctx) => {
  const p = ctx.p!;
  ({ before: ctx.before, target: ctx.target } = await insertThenDelete(p, 'order_lines'));

  // A segment missing from the middle of the archive: refused, with nothing touched.
  const dir = await fs.realpath(path.join(p.env.DB_BACKUP_DIR, 'wal'));
  const segs = await archived(p);
  const gone = segs[Math.floor(segs.length / 2)];
  assert.ok(segs.indexOf(gone) < segs.length - 1, 'the gap is inside the archive');
  const id = await dataId(p);
  await fs.rename(path.join(dir, gone), path.join(p.dir, gone));
  const refused = await cli(['db:restore', '--to-time', ctx.target, '--yes'], p.env);
  failsClearly(refused, new RegExp(`missing segment ${gone}`));
  assert.is(await dataId(p), id, 'the data directory is the same');
  assert.is(await countNotes(p, 'inserted at t1'), 0, 'the server still runs, with its data as it was');
  assert.equal(
    (await fs.readdir(path.dirname(await fs.realpath(nativePaths(p.nativeDir).data)))).filter((n) => n.startsWith('data.')),
    [],
  );
  await fs.rename(path.join(p.dir, gone), path.join(dir, gone));

  // A target before the oldest base backup.
  failsClearly(await cli(['db:restore', '--to-time', '2001-02-03 04:05:06', '--yes'], p.env), /before the oldest base backup/);

  const r = await ok(['db:restore', '--to-time', ctx.target, '--yes', '--json'], p.env);
  const out = JSON.parse(r.stdout);
  assert.is(out.base, ctx.base);
  assert.match(out.stopped, /recovery stopping before commit/);
  assert.is(out.timeline, 2);
  assert.is(await countNotes(p, 'inserted at t1'), 5, 'the rows of t1 are back');
  assert.is(await tableDigest(p, 'order_lines'), ctx.before, 'everything committed before t1 is there');
  assert.not.equal(await dataId(p), id, 'the data directory was replaced');
  assert.equal(
    (await fs.readdir(path.dirname(await fs.realpath(nativePaths(p.nativeDir).data)))).filter((n) => n.startsWith('data.')),
    [],
    'the old one is gone once recovery succeeded',
  );
  // The recovery settings were for that start only.
  const auto = await suQuery(p, `SELECT name FROM pg_file_settings WHERE name LIKE 'recovery_target%' OR name = 'restore_command'`);
  assert.equal(auto, []);
});

pitr('--to-lsn stops at a WAL location, on the new timeline, from a base backup taken after the first recovery', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:backup', '--physical'], p.env);
  await ownerQuery(p, `INSERT INTO notes (body) VALUES ('before the lsn')`);
  const lsn = String((await suQuery(p, 'SELECT pg_current_wal_lsn()::text AS l'))[0].l);
  await ownerQuery(p, `INSERT INTO notes (body) VALUES ('after the lsn')`);
  const r = await ok(['db:restore', '--to-lsn', lsn, '--yes', '--json'], p.env);
  assert.is(JSON.parse(r.stdout).timeline, 3);
  assert.is(await countNotes(p, 'before the lsn'), 1);
  assert.is(await countNotes(p, 'after the lsn'), 0);
});

pitr('retention: DB_BACKUP_KEEP (one a day) removes older base backups and the WAL before the oldest kept one', async (ctx) => {
  const p = ctx.p!;
  const r = await ok(['db:backup', '--physical', '--json'], { ...p.env, DB_BACKUP_KEEP: '1/0/0' });
  const out = JSON.parse(r.stdout);
  assert.ok(out.removed.length >= 1, 'the older base backup of the day is removed');
  assert.ok(out.removedWal > 0, 'and the WAL before the kept one');
  const names = (await fs.readdir(p.env.DB_BACKUP_DIR)).filter((n) => n.endsWith('-physical') || /-physical-\d+$/.test(n));
  assert.equal(names, [out.name]);
  const startSeg = BigInt(`0x${out.startLsn.split('/')[0]}`) * 256n + BigInt(`0x${out.startLsn.split('/')[1]}`) / 0x1000000n;
  for (const s of await archived(p)) assert.ok(BigInt(`0x${s.slice(8, 16)}`) * 256n + BigInt(`0x${s.slice(16)}`) >= startSeg, `${s} kept`);
});

pitr.run();

// ---------------------------------------------------------------------------------------------
const script = suite('wal-archive.sh copies a segment atomically and never overwrites one');
const SCRIPT = path.join(ROOT, 'database/infra/scripts/wal-archive.sh');

/** The script as PostgreSQL runs it: in the data directory (`data`). */
const archiveRun = (data: string, archive: string, seg: string, name: string) => run('sh', [SCRIPT, archive, seg, name], {}, { cwd: data });

script('it keeps nothing until the archive folder exists, then copies; the same bytes again succeed, other bytes fail', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-walarchive-'));
  try {
    const seg = path.join(dir, 'seg');
    await fs.writeFile(seg, 'one');
    const archive = path.join(dir, 'archive');
    const name = '000000010000000000000003';
    const run = (a: string, s: string, n: string) => archiveRun(dir, a, s, n); // a data directory without the armed file
    assert.is((await run(archive, seg, name)).code, 0, 'not armed: success, nothing kept');
    assert.not.ok(await fs.stat(archive).catch(() => undefined));
    await fs.mkdir(archive);
    assert.is((await run(archive, seg, name)).code, 0);
    assert.is(await fs.readFile(path.join(archive, name), 'utf8'), 'one');
    assert.is((await run(archive, seg, name)).code, 0, 'a retry with the same bytes');
    await fs.writeFile(seg, 'two');
    const r = await run(archive, seg, name);
    assert.is(r.code, 1);
    assert.match(r.stderr, /refusing to overwrite/);
    assert.is(await fs.readFile(path.join(archive, name), 'utf8'), 'one', 'the archived segment is untouched');
    assert.equal(await fs.readdir(archive), [name], 'no temporary file left');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

script('once armed (its file in the data directory), a missing archive folder fails and keeps the segment, saying why', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-walarchive-'));
  try {
    const data = path.join(dir, 'data');
    await fs.mkdir(data);
    await fs.writeFile(path.join(data, 'pg-deploy.wal-armed'), 'armed\n');
    const seg = path.join(data, 'seg');
    await fs.writeFile(seg, 'one');
    const archive = path.join(dir, 'unmounted', 'wal');
    const name = '000000010000000000000004';
    const r = await archiveRun(data, archive, seg, name);
    assert.is(r.code, 1, 'a failure: PostgreSQL keeps the segment and retries');
    assert.match(r.stderr, /^wal-archive: the archive folder .*unmounted\/wal is missing, but this cluster's archive is armed/);
    assert.match(r.stderr, /000000010000000000000004 is kept in pg_wal and retried/);
    assert.is(r.stderr.trim().split('\n').length, 1, 'one line in the server log');
    assert.is(await fs.readFile(seg, 'utf8'), 'one', 'the segment is untouched');
    assert.not.ok(await fs.stat(path.join(dir, 'unmounted')).catch(() => undefined), 'nothing made in its place');
    // The folder back (mounted again): the retry archives it.
    await fs.mkdir(archive, { recursive: true });
    assert.is((await archiveRun(data, archive, seg, name)).code, 0);
    assert.is(await fs.readFile(path.join(archive, name), 'utf8'), 'one');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

script.run();

// ---------------------------------------------------------------------------------------------
const names = suite('WAL names, targets and the archive check');

names("segment names are PostgreSQL's, both ways", () => {
  const seg = 16 * 1024 * 1024;
  assert.is(segmentName(1, 0x1ffn, seg), '0000000100000001000000FF');
  assert.equal(parseSegment('0000000200000001000000FF', seg), { timeline: 2, segno: 0x1ffn });
  assert.is(parseSegment('00000002.history', seg), undefined);
});

names('a time without a zone is UTC; nonsense and impossible dates are refused', () => {
  const t = parseTime('2026-12-01 14:03:07.123456');
  assert.is(t.kind === 'time' && t.at.toISOString(), '2026-12-01T14:03:07.123Z');
  assert.is(t.text, '2026-12-01 14:03:07.123456+00:00');
  const z = parseTime('2026-12-01T15:03:07+0100');
  assert.is(z.kind === 'time' && z.at.toISOString(), '2026-12-01T14:03:07.000Z');
  assert.throws(() => parseTime('yesterday'), /--to-time must be/);
  assert.throws(() => parseTime('2026-02-30 10:00'), /--to-time must be/);
});

names('a gap anywhere from the base backup to the newest segment is named; so is an archive that ends before the target', () => {
  const seg = 16 * 1024 * 1024;
  const at = (n: number, ms: number) => ({ name: segmentName(1, BigInt(n), seg), timeline: 1, segno: BigInt(n), archivedAt: new Date(ms) });
  const target = { kind: 'time' as const, at: new Date(1500), text: '' };
  assert.is(checkArchive([at(3, 1000), at(4, 2000)], { segno: 3n, timeline: 1 }, target, seg, 'wal').count, 2);
  assert.throws(
    () => checkArchive([at(3, 1000), at(5, 2000)], { segno: 3n, timeline: 1 }, target, seg, 'wal'),
    /missing segment 000000010000000000000004/,
  );
  assert.throws(() => checkArchive([at(3, 1000)], { segno: 3n, timeline: 1 }, target, seg, 'wal'), /ends with .* before/);
  assert.throws(() => checkArchive([], { segno: 3n, timeline: 1 }, target, seg, 'wal'), /ends before the base backup starts/);
});

names.run();

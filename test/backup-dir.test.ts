import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { chosenFormat, restoreArgs, restoreJobs } from '@dbkit/core/backup/format';
import type { Manifest } from '@dbkit/core/backup/store';
import { cli, ok, removeProject, startProject, type Project } from './setup/project.ts';
import { backupDirState, backupProject, fillShop, flipByte, nothingLeft, ownerQuery, shopSnapshot, suQuery } from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

interface Ctx {
  p?: Project;
}

const mode = async (f: string) => (await fs.stat(f)).mode & 0o777;

/** The data files of a backup's db.dir (every file but toc.dat), largest first. */
async function dataFiles(dir: string): Promise<string[]> {
  const names = (await fs.readdir(path.join(dir, 'db.dir'))).filter((n) => n !== 'toc.dat');
  const sized = await Promise.all(names.map(async (n) => ({ n, size: (await fs.stat(path.join(dir, 'db.dir', n))).size })));
  return sized.sort((a, b) => b.size - a.size).map((x) => x.n);
}

// ---------------------------------------------------------------------------------------------
const rules = suite('the choice of format and jobs');

const cfg = { backupFormat: 'custom' as const, backupJobs: 3 };

rules('custom is the default; dir takes --jobs, else DB_BACKUP_JOBS', () => {
  assert.equal(chosenFormat(cfg, undefined, undefined), { kind: 'custom', jobs: 1 });
  assert.equal(chosenFormat(cfg, 'dir', undefined), { kind: 'dir', jobs: 3 });
  assert.equal(chosenFormat(cfg, 'dir', '2'), { kind: 'dir', jobs: 2 });
  assert.equal(chosenFormat({ backupFormat: 'dir', backupJobs: 4 }, undefined, '8'), { kind: 'dir', jobs: 8 });
  assert.equal(chosenFormat({ backupFormat: 'dir', backupJobs: 4 }, 'custom', undefined), { kind: 'custom', jobs: 1 });
});

rules('a parallel restore drops --single-transaction, which pg_restore refuses with --jobs; one job keeps it', () => {
  assert.equal(restoreArgs(1, 'x'), ['--exit-on-error', '--single-transaction', '--no-password', '--dbname=x']);
  assert.equal(restoreArgs(3, 'x'), ['--exit-on-error', '--jobs=3', '--no-password', '--dbname=x']);
});

rules('a restore uses the jobs the dump recorded unless told; a manifest without a dump kind is custom', () => {
  const dir = { name: 'b', dump: { kind: 'dir', file: 'db.dir', bytes: 1, jobs: 3, files: [] } } as unknown as Manifest;
  const old = { name: 'b', dump: { file: 'db.dump', bytes: 1, sha256: 'x' } } as unknown as Manifest;
  assert.is(restoreJobs(dir, undefined), 3);
  assert.is(restoreJobs(dir, 1), 1);
  assert.is(restoreJobs(old, undefined), 1);
  assert.throws(() => restoreJobs(old, 2), /--jobs goes with dir-format backups/);
});

rules.run();

// ---------------------------------------------------------------------------------------------
const dir = suite<Ctx & { before?: Awaited<ReturnType<typeof shopSnapshot>>; backup?: string; pristine?: string }>(
  'a directory-format backup, dumped and restored in parallel',
);

setUp(dir, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p, { migrate: [] });
  await fillShop(ctx.p);
  ctx.before = await shopSnapshot(ctx.p);
});

dir.after(async (ctx) => {
  await removeProject(ctx.p);
});

dir(
  'db:backup --format dir --jobs 2 --verify writes db.dir, a checksum per file and a manifest listing them, all private, and marks it verified',
  async (ctx) => {
    const p = ctx.p!;
    const out = JSON.parse((await ok(['db:backup', '--format', 'dir', '--jobs', '2', '--verify', '--json'], p.env)).stdout);
    assert.is(out.verified, true);
    assert.is(out.format, 'dir');
    assert.is(out.jobs, 2);
    ctx.backup = out.name;
    const b = path.join(p.env.DB_BACKUP_DIR, out.name);
    assert.equal((await fs.readdir(b)).sort(), ['db.dir', 'db.dir.sha256', 'manifest.json', 'roles.sql']);
    assert.is((await fs.readFile(path.join(b, 'db.dir/toc.dat'))).subarray(0, 5).toString('latin1'), 'PGDMP');
    const files = (await fs.readdir(path.join(b, 'db.dir'))).sort();
    assert.ok(files.length >= 6, `toc.dat and a data file per table: ${files.join(', ')}`);
    // sha256sum itself reads the list, from inside the backup.
    execFileSync('sha256sum', ['--check', '--status', 'db.dir.sha256'], { cwd: b });
    const listed = (await fs.readFile(path.join(b, 'db.dir.sha256'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => l.split('  ')[1]);
    assert.equal(
      listed,
      files.map((f) => `db.dir/${f}`),
    );
    const m = JSON.parse(await fs.readFile(path.join(b, 'manifest.json'), 'utf8'));
    assert.is(m.format, 1);
    assert.is(m.dump.kind, 'dir');
    assert.is(m.dump.file, 'db.dir');
    assert.is(m.dump.jobs, 2);
    assert.equal(
      m.dump.files.map((f: { file: string }) => f.file),
      files.map((f) => `db.dir/${f}`),
    );
    assert.is(
      m.dump.bytes,
      m.dump.files.reduce((n: number, f: { bytes: number }) => n + f.bytes, 0),
    );
    assert.is(m.data['table public.order_lines'], '5000');
    assert.ok(m.verified?.at, 'marked verified');
    assert.is(await mode(b), 0o700);
    assert.is(await mode(path.join(b, 'db.dir')), 0o700);
    for (const f of ['db.dir.sha256', 'manifest.json', 'roles.sql', ...files.map((f) => `db.dir/${f}`)])
      assert.is(await mode(path.join(b, f)), 0o600, f);
    // A copy for the damage tests below, taken while it is intact.
    ctx.pristine = path.join(p.dir, 'pristine');
    await fs.cp(b, ctx.pristine, { recursive: true });
  },
);

dir('db:status shows the dir backup as the last one, verified', async (ctx) => {
  const o = JSON.parse((await ok(['db:status', '--json'], ctx.p!.env)).stdout).overview;
  assert.is(o.lastBackup.name, ctx.backup);
  assert.is(o.lastBackup.verified, true);
});

dir('db:restore of the dir backup uses the jobs the dump used, and brings back rows, sequence, function and schema', async (ctx) => {
  const p = ctx.p!;
  await ownerQuery(p, "DELETE FROM order_lines; INSERT INTO notes (body) VALUES ('after the backup')");
  const r = await ok(['db:restore', ctx.backup!, '--yes', '--no-backup'], p.env);
  assert.match(r.stderr, /restoring .* into a new database \(2 jobs\)/);
  const after = await shopSnapshot(p);
  assert.equal(after.data, ctx.before!.data);
  assert.is(after.schema, ctx.before!.schema, 'pg_dump --schema-only is identical');
});

dir('db:restore --jobs 1 and db:backup:verify --jobs 3 override it', async (ctx) => {
  const p = ctx.p!;
  const one = await ok(['db:restore', ctx.backup!, '--yes', '--no-backup', '--jobs', '1'], p.env);
  assert.match(one.stderr, /restoring .* into a new database\n/);
  assert.equal((await shopSnapshot(p)).data, ctx.before!.data);
  const three = await ok(['db:backup:verify', ctx.backup!, '--jobs', '3'], p.env);
  assert.match(three.stderr, /into the scratch database \S+ \(3 jobs\)/);
});

dir('a flipped byte in one data file fails db:backup:verify, and db:restore refuses the backup, changing nothing', async (ctx) => {
  const p = ctx.p!;
  const b = path.join(p.env.DB_BACKUP_DIR, ctx.backup!);
  await ownerQuery(p, "INSERT INTO notes (body) VALUES ('after the backup')");
  const [largest] = await dataFiles(b);
  await flipByte(path.join(b, 'db.dir', largest));
  const damaged = new RegExp(`damaged: db\\.dir/${largest.replace(/\./g, '\\.')} does not match its checksum`);
  failsClearly(await cli(['db:backup:verify', ctx.backup!], p.env), damaged, { hint: /another backup/ });
  failsClearly(await cli(['db:restore', ctx.backup!, '--yes', '--no-backup'], p.env), damaged);
  const notes = await ownerQuery(p, "SELECT count(*)::int AS n FROM notes WHERE body = 'after the backup'");
  assert.is(notes[0].n, 1, 'the database was not touched');
  const leftovers = await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%'");
  assert.equal(leftovers, [], 'no scratch or half-restored database is left');
});

dir('a missing data file, a missing toc.dat or a file the dump did not write fails the check', async (ctx) => {
  const p = ctx.p!;
  const copy = async (name: string) => {
    const to = path.join(p.dir, name);
    await fs.cp(ctx.pristine!, to, { recursive: true });
    return to;
  };
  const intact = await copy('intact');
  await ok(['db:backup:verify', intact], p.env);
  const noData = await copy('no-data');
  const [gone] = await dataFiles(noData);
  await fs.rm(path.join(noData, 'db.dir', gone));
  failsClearly(await cli(['db:backup:verify', noData], p.env), new RegExp(`damaged: db\\.dir/${gone.replace(/\./g, '\\.')} is missing`));
  const noToc = await copy('no-toc');
  await fs.rm(path.join(noToc, 'db.dir/toc.dat'));
  failsClearly(await cli(['db:backup:verify', noToc], p.env), /damaged: db\.dir\/toc\.dat is missing/);
  const extra = await copy('extra');
  await fs.writeFile(path.join(extra, 'db.dir/9999.dat.gz'), 'not from pg_dump');
  failsClearly(await cli(['db:restore', extra, '--yes', '--no-backup'], p.env), /damaged: db\.dir\/9999\.dat\.gz is not part of the dump/);
  const noList = await copy('no-list');
  await fs.rm(path.join(noList, 'db.dir.sha256'));
  failsClearly(await cli(['db:backup:verify', noList], p.env), /damaged: db\.dir\.sha256 is missing or does not match the manifest/);
});

dir.run();

// ---------------------------------------------------------------------------------------------
const refusals = suite<Ctx>('bad flags and failed dumps leave nothing behind');

setUp(refusals, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p, { migrate: [] });
});

refusals.after(async (ctx) => {
  await removeProject(ctx.p);
});

refusals('a bad --format or --jobs is a usage error (exit 2) saying what to write instead, and nothing is written', async (ctx) => {
  const p = ctx.p!;
  const cases: [string[], RegExp, RegExp][] = [
    [['--format', 'tar'], /^error: --format tar is not a backup format$/, /--format custom .* or --format dir/],
    [['--format', 'dir', '--jobs', '0'], /^error: --jobs must be a whole number from 1 to 64, not "0"$/, /--jobs 4/],
    [['--format', 'dir', '--jobs', 'x'], /not "x"/, /--jobs 4/],
    [['--format', 'dir', '--jobs', '65'], /not "65"/, /--jobs 4/],
    [['--jobs', '4'], /^error: --jobs goes with --format dir/, /add --format dir .*or drop --jobs/],
  ];
  for (const [args, what, hint] of cases) {
    const r = await cli(['db:backup', ...args], p.env);
    failsClearly(r, what, { hint, code: 2 });
  }
  await nothingLeft(p);
  failsClearly(await cli(['db:backup'], { ...p.env, DB_BACKUP_FORMAT: 'tar' }), /DB_BACKUP_FORMAT=tar is not one of custom, dir/, {
    hint: /custom .* or dir/,
  });
  failsClearly(
    await cli(['db:backup', '--format', 'dir'], { ...p.env, DB_BACKUP_JOBS: '0' }),
    /DB_BACKUP_JOBS=0 is not a whole number from 1 to 64/,
  );
  await nothingLeft(p);
});

refusals('help lists --format and --jobs', async (ctx) => {
  const r = await ok(['db:backup', '--help'], ctx.p!.env);
  assert.match(r.stdout, /--format <value>\s+custom .* or dir/);
  assert.match(r.stdout, /--jobs <value>\s+with --format dir/);
  assert.match((await ok(['db:restore', '--help'], ctx.p!.env)).stdout, /--jobs <value>\s+dir-format backups/);
});

refusals('a stopped server: one error line naming the fix, no backup', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:down'], p.env);
  try {
    failsClearly(await cli(['db:backup', '--format', 'dir', '--jobs', '2'], p.env), /not running/, { hint: /db:up/ });
    await nothingLeft(p);
  } finally {
    await ok(['db:up'], p.env);
  }
});

refusals('a pg_dump -Fd that fails (wrong superuser password) leaves no partial directory', async (ctx) => {
  const p = ctx.p!;
  const file = path.join(p.secretsDir, 'postgres_password');
  const real = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, 'not-the-password-1234567890', { mode: 0o600 });
  try {
    failsClearly(await cli(['db:backup', '--format', 'dir', '--jobs', '2'], p.env), /postgres_password/);
    await nothingLeft(p);
  } finally {
    await fs.writeFile(file, real, { mode: 0o600 });
  }
});

refusals('--jobs on a custom-format backup is refused by db:backup:verify and db:restore before anything happens', async (ctx) => {
  const p = ctx.p!;
  const name = JSON.parse((await ok(['db:backup', '--verify', '--json'], p.env)).stdout).name;
  for (const args of [
    ['db:backup:verify', name, '--jobs', '2'],
    ['db:restore', name, '--yes', '--jobs', '2'],
  ]) {
    const r = await cli(args, p.env);
    failsClearly(r, /--jobs goes with dir-format backups; .* is one custom-format file/, { hint: /drop --jobs/, code: 2 });
  }
  assert.equal((await backupDirState(p)).finished, [name], 'no safety backup was taken');
});

refusals('DB_BACKUP_FORMAT=dir and DB_BACKUP_JOBS make dir backups without flags, safety backups included', async (ctx) => {
  const p = ctx.p!;
  const env = { ...p.env, DB_BACKUP_FORMAT: 'dir', DB_BACKUP_JOBS: '2' };
  const out = JSON.parse((await ok(['db:backup', '--verify', '--json'], env)).stdout);
  assert.is(out.format, 'dir');
  assert.is(out.jobs, 2);
  await ok(['db:restore', out.name, '--yes'], env);
  const safety = (await backupDirState(p)).finished.find((n) => n.endsWith('-before-restore'))!;
  const m = JSON.parse(await fs.readFile(path.join(p.env.DB_BACKUP_DIR, safety, 'manifest.json'), 'utf8'));
  assert.is(m.dump.kind, 'dir');
});

refusals('retention removes dir backups as it removes custom ones, whole', async (ctx) => {
  const p = ctx.p!;
  const env = { ...p.env, DB_BACKUP_KEEP: '1/0/0' };
  // Every backup is today's: 1/0/0 keeps the newest and the newest verified one.
  const a = JSON.parse((await ok(['db:backup', '--format', 'dir', '--jobs', '2', '--json'], env)).stdout);
  const b = JSON.parse((await ok(['db:backup', '--json'], env)).stdout);
  assert.ok(b.removed.includes(a.name), `the older dir backup went: ${b.removed}`);
  const c = JSON.parse((await ok(['db:backup', '--format', 'dir', '--json'], env)).stdout);
  assert.ok(c.removed.includes(b.name));
  const s = await backupDirState(p);
  assert.ok(s.finished.includes(c.name));
  // Names have a one-second stamp: within one second, c may take the name a left free when it went.
  assert.not.ok(
    [a.name, b.name].filter((n) => n !== c.name).some((n) => s.finished.includes(n)),
    `${s.finished}`,
  );
  assert.equal(s.other, [], 'nothing half-removed');
});

refusals.run();

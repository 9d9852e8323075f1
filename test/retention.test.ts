import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isoWeek, parseKeep } from '@dbkit/core/backup/retention';
import { applyRetention, backupName, listBackups, markVerified, MANIFEST } from '@dbkit/core/backup/store';
import { createBackup } from '@dbkit/core/backup/backup';
import { nativeRuntime } from '@dbkit/core/runtime/native';
import type { Ctx as CoreCtx } from '@dbkit/core/context';
import { testCtx } from './setup/ctx.ts';
import { cli, ok, removeProject, startProject, type Project } from './setup/project.ts';
import { backupDirState, backupProject } from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

const DAY = 86_400_000;

// ---------------------------------------------------------------------------------------------
const rules = suite('DB_BACKUP_KEEP and ISO weeks');

rules('DB_BACKUP_KEEP defaults to 7 daily, 4 weekly and 6 monthly backups', () => {
  assert.equal(parseKeep(undefined), { daily: 7, weekly: 4, monthly: 6 });
  assert.equal(parseKeep(' 14 / 0 / 12 '), { daily: 14, weekly: 0, monthly: 12 });
});

rules('a malformed or zero-daily DB_BACKUP_KEEP is refused with the form to use', async () => {
  for (const bad of ['7,4,6', '7/4', 'a/b/c', '0/4/6']) {
    const r = await cli(['db:status'], { DB_BACKUP_KEEP: bad, DB_RUNTIME: 'native' });
    failsClearly(r, /DB_BACKUP_KEEP/, { hint: /DB_BACKUP_KEEP=/ });
  }
});

rules('ISO weeks start on Monday and belong to the year of their Thursday', () => {
  assert.is(isoWeek(new Date('2023-01-01T12:00:00Z')), '2022-W52'); // a Sunday
  assert.is(isoWeek(new Date('2023-01-02T00:00:00Z')), '2023-W01'); // the Monday after
  assert.is(isoWeek(new Date('2020-12-31T00:00:00Z')), '2020-W53');
  assert.is(isoWeek(new Date('2024-12-30T00:00:00Z')), '2025-W01');
});

rules.run();

// ---------------------------------------------------------------------------------------------
interface YearCtx {
  dir?: string;
  ctx?: CoreCtx;
  now?: Date;
}

const year = suite<YearCtx>('a year of nightly backups under a fake clock');

year.before(async (c) => {
  c.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'retention-'));
  c.now = new Date('2023-01-01T02:00:00Z');
  c.ctx = testCtx({ DB_BACKUP_DIR: c.dir, DB_BACKUP_KEEP: '7/4/6' }, { clock: () => c.now! });
});

year.after(async (c) => {
  if (c.dir) await fs.rm(c.dir, { recursive: true, force: true });
});

/** A finished backup as the store sees one (a directory with a manifest), stamped by the clock. */
async function fakeBackup(c: YearCtx): Promise<string> {
  const at = c.ctx!.clock();
  const name = backupName('app', at, 3);
  await fs.mkdir(path.join(c.dir!, name));
  await fs.writeFile(path.join(c.dir!, name, MANIFEST), JSON.stringify({ format: 1, name, database: 'app', createdAt: at.toISOString() }));
  return name;
}

const day = (name: string) => /-(\d{4})(\d{2})(\d{2})T/.exec(name)!.slice(1).join('-');

year('keeps exactly the last 7 days, 4 weeks, 6 months and the newest verified backup, whatever its age', async (c) => {
  const verifiedOn = ['2023-03-15', '2023-06-10'];
  let removedVerified: string[] = [];
  for (; c.now!.getUTCFullYear() === 2023; c.now = new Date(c.now!.getTime() + DAY)) {
    const name = await fakeBackup(c);
    if (verifiedOn.includes(day(name))) {
      const b = (await listBackups(c.ctx!)).find((x) => x.manifest.name === name)!;
      await markVerified(c.ctx!, b, { at: c.now!.toISOString(), tables: 1, rows: 1 });
    }
    const removed = await applyRetention(c.ctx!);
    assert.not.ok(removed.includes(name), 'the new backup is never the one removed');
    removedVerified = removedVerified.concat(removed.filter((n) => verifiedOn.includes(day(n))));
    // Mid-year, the March backup is the newest verified one and survives although no rule keeps it.
    if (day(name) === '2023-06-01') assert.ok((await listBackups(c.ctx!)).some((b) => day(b.manifest.name) === '2023-03-15'));
  }
  const kept = (await listBackups(c.ctx!)).map((b) => day(b.manifest.name)).sort();
  assert.equal(kept, [
    '2023-06-10', // the newest verified
    '2023-07-31',
    '2023-08-31',
    '2023-09-30',
    '2023-10-31',
    '2023-11-30', // months (December's is the 31st)
    '2023-12-10',
    '2023-12-17',
    '2023-12-24', // weeks (this week's is the 31st)
    '2023-12-25',
    '2023-12-26',
    '2023-12-27',
    '2023-12-28',
    '2023-12-29',
    '2023-12-30',
    '2023-12-31', // days
  ]);
  assert.equal(removedVerified.map(day), ['2023-03-15'], "the March backup went only once June's was verified");
});

year('a directory without a manifest (an unfinished backup) is never touched by retention', async (c) => {
  await fs.mkdir(path.join(c.dir!, '.partial-20240101T000000Z-1-abc'));
  await fs.mkdir(path.join(c.dir!, 'not-a-backup'));
  await fakeBackup(c);
  await applyRetention(c.ctx!);
  const names = await fs.readdir(c.dir!);
  assert.ok(names.includes('.partial-20240101T000000Z-1-abc'));
  assert.ok(names.includes('not-a-backup'));
});

year.run();

// ---------------------------------------------------------------------------------------------
const real = suite<{ p?: Project; now?: Date }>('retention of real backups after each success, never after a failure');

setUp(real, async (c) => {
  c.p = await backupProject();
  c.p.env.DB_BACKUP_KEEP = '2/1/1';
  await startProject(c.p);
  await ok(['db:migrate'], c.p.env);
  c.now = new Date('2024-02-27T03:00:00Z');
});

real.after(async (c) => {
  await removeProject(c.p);
});

real('five nightly backups under a fake clock leave the two newest days, the newest verified one, and nothing partial', async (c) => {
  const ctx = testCtx(c.p!.env, { clock: () => c.now! });
  const rt = nativeRuntime(ctx);
  const names: string[] = [];
  for (let i = 0; i < 5; i++, c.now = new Date(c.now!.getTime() + DAY)) {
    const b = await createBackup(ctx, rt);
    names.push(b.manifest.name);
    if (i === 1) await markVerified(ctx, b, { at: c.now!.toISOString(), tables: 0, rows: 0 });
    await applyRetention(ctx);
  }
  assert.match(names[0], /^app-20240227T030000Z-v1$/, 'named by the injected clock');
  const s = await backupDirState(c.p!);
  // 2/1/1: the last two days (Mar 1, Mar 2); this ISO week's and this month's newest is Mar 2;
  // the verified one (Feb 28) stays.
  assert.equal(s.finished, [names[1], names[3], names[4]].sort());
  assert.equal(s.other, []);
});

real('a failed backup (server stopped) removes nothing', async (c) => {
  const before = await backupDirState(c.p!);
  await ok(['db:down'], c.p!.env);
  try {
    // The next real day would otherwise prune: the failure must come before any retention.
    const r = await cli(['db:backup'], { ...c.p!.env, DB_BACKUP_KEEP: '1/0/0' });
    assert.is.not(r.code, 0);
  } finally {
    await ok(['db:up'], c.p!.env);
  }
  assert.equal(await backupDirState(c.p!), before);
});

real.run();

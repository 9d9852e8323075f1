import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { backupProject, ownerQuery, suQuery } from './setup/backup.ts';
import { killAt } from './setup/interrupt.ts';
import { setUp } from './setup/hooks.ts';
import { cli, ok, removeProject, startProject, type Project } from './setup/project.ts';
import { countNotes, dataId } from './setup/pitr.ts';

// db:restore --to-lsn killed at a step it prints (native, real servers): the old data directory stays
// aside (data.before-pitr-<pid>) and the step is recorded; the next db:up or db:restore puts the old
// data back when the recovery had not completed, or finishes it when it had, in one line.

interface Ctx {
  p?: Project;
  lsn?: string;
}

const s = suite<Ctx>('a killed db:restore --to-time is rolled back or finished by the next db:up or db:restore');

setUp(s, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p, { migrate: [] });
  await ownerQuery(ctx.p, 'CREATE TABLE notes (id serial PRIMARY KEY, body text)');
  await ok(['db:backup', '--physical'], ctx.p.env);
  await ownerQuery(ctx.p, `INSERT INTO notes (body) VALUES ('before the lsn')`);
  ctx.lsn = String((await suQuery(ctx.p, 'SELECT pg_current_wal_lsn()::text AS l'))[0].l);
  await ownerQuery(ctx.p, `INSERT INTO notes (body) VALUES ('after the lsn')`);
});

s.after(async (ctx) => {
  const archive = ctx.p && (await fs.realpath(path.join(ctx.p.env.DB_BACKUP_DIR, 'wal')).catch(() => undefined));
  await removeProject(ctx.p);
  if (archive) await fs.rm(archive, { recursive: true, force: true });
});

/** What a killed recovery sets aside beside the data directory. */
async function aside(p: Project): Promise<string[]> {
  const data = await fs.realpath(nativePaths(p.nativeDir).data).catch(() => nativePaths(p.nativeDir).data);
  return (await fs.readdir(path.dirname(data))).filter((n) => n.startsWith('data.before-pitr-'));
}

const said = (stderr: string, re: RegExp) => stderr.split('\n').filter((l) => re.test(l));

/** The restore killed once it prints `line`, with the old data left aside; then `next`, which must succeed: its one line about the repair. */
async function killThen(p: Project, args: string[], line: RegExp, next: string[]): Promise<string> {
  const r = await killAt(args, p.env, { line, afterMs: 0, label: `at ${line}` });
  assert.ok(r.killed, `killed before it finished: ${r.stderr}`);
  assert.is((await aside(p)).length, 1, 'the old data waits aside');
  const n = await cli(next, p.env);
  assert.is(n.code, 0, n.stderr);
  const lines = said(n.stderr, /interrupted db:restore/);
  assert.is(lines.length, 1, n.stderr);
  assert.equal(await aside(p), [], 'nothing left aside');
  return lines[0];
}
const restoreArgs = (ctx: Ctx) => ['db:restore', '--to-lsn', ctx.lsn!, '--yes', '--no-backup'];

s('killed while WAL replays: db:up puts the old data directory back, in one line', async (ctx) => {
  const p = ctx.p!;
  const id = await dataId(p);
  const line = await killThen(p, restoreArgs(ctx), /replaying \d+ archived WAL segment/, ['db:up']);
  assert.match(
    line,
    /rolled back an interrupted db:restore to .* \(pid \d+, from app-.*-physical\): its recovery had not completed; the data directory is back/,
  );
  assert.is(await dataId(p), id, 'the same data directory as before the restore');
  assert.is(await countNotes(p, 'after the lsn'), 1, 'with what was written after the target');
  const again = await cli(['db:up'], p.env);
  assert.equal(said(again.stderr, /interrupted db:restore/), [], 'repaired once: the next db:up has nothing to say');
});

s('killed while it restores the base backup: the next db:restore rolls it back in one line, then recovers', async (ctx) => {
  const p = ctx.p!;
  assert.match(
    await killThen(p, restoreArgs(ctx), /restoring the base backup/, restoreArgs(ctx)),
    /^.*rolled back an interrupted db:restore/,
  );
  assert.is(await countNotes(p, 'before the lsn'), 1);
  assert.is(await countNotes(p, 'after the lsn'), 0, 'recovered to the target');
  await ownerQuery(p, `INSERT INTO notes (body) VALUES ('after the lsn')`); // as the next test expects it
});

s('killed once the recovery completed (while it provisions): db:up finishes it, keeping the recovered data, in one line', async (ctx) => {
  const p = ctx.p!;
  const id = await dataId(p);
  assert.match(
    await killThen(p, restoreArgs(ctx), /provisioning and checking the logins/, ['db:up']),
    /finished an interrupted db:restore .*: its recovery had completed; the old data directory it had set aside is removed/,
  );
  assert.is.not(await dataId(p), id, 'the recovered data directory stays');
  assert.is(await countNotes(p, 'after the lsn'), 0, 'as recovered to the target');
  assert.is(await countNotes(p, 'before the lsn'), 1);
});

s.run();

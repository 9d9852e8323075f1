import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '@dbkit/core/errors';
import { checkFiles, loadMigrations } from '@dbkit/core/migrations/files';
import { cli, makeProject, removeProject, startProject, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';
import { output, tableExists, versionRows } from './setup/engine.ts';

// "café" saved by an editor set to Latin-1: the é is the single byte 0xE9, which is not UTF-8.
const LATIN1 = Buffer.from("CREATE TABLE menu (name text);\nINSERT INTO menu VALUES ('caf\u00e9');\n", 'latin1');
const UTF8_BOM = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("SELECT 'caf\u00e9';\n", 'utf8')]);

const unit = suite<{ dir: string }>('migration files must be UTF-8', { dir: '' });

unit.before.each(async (ctx) => {
  ctx.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'migenc-'));
  await fs.writeFile(path.join(ctx.dir, '000001_menu.up.sql'), LATIN1);
  await fs.writeFile(path.join(ctx.dir, '000001_menu.down.sql'), 'DROP TABLE menu;\n');
});
unit.after.each(async (ctx) => fs.rm(ctx.dir, { recursive: true, force: true }));

function refusal(fn: () => unknown): UserError {
  try {
    fn();
  } catch (e) {
    assert.instance(e, UserError);
    return e as UserError;
  }
  throw new Error('a Latin-1 file was accepted');
}

unit('loadMigrations (docker checks every file this way) names the file, the byte, its line and column', ({ dir }) => {
  const e = refusal(() => loadMigrations(dir));
  assert.match(
    e.message,
    /^invalid migrations, nothing was applied:\n {2}000001_menu\.up\.sql: not valid UTF-8: byte 0xE9 at line 2, column 30 \(saved as Latin-1 or Windows-1252\?\); save it as UTF-8/,
  );
});

unit('checkFiles (the native runner checks what it will run this way) refuses it too', ({ dir }) => {
  const [m] = loadMigrations(dir, { texts: 'later' });
  assert.match(refusal(() => checkFiles([m.up])).message, /000001_menu\.up\.sql: not valid UTF-8: byte 0xE9 at line 2/);
});

unit('valid UTF-8 is read as it is, a byte order mark included, as before', async ({ dir }) => {
  await fs.writeFile(path.join(dir, '000001_menu.up.sql'), UTF8_BOM);
  const [m] = loadMigrations(dir);
  assert.is(m.up.sql, "\ufeffSELECT 'caf\u00e9';\n");
});

unit.run();

const live = suite<{ p?: Project }>('db:migrate with a Latin-1 file pending', {});

setUp(live, async (ctx) => {
  ctx.p = await makeProject({
    migrations: {
      '000001_first.up.sql': 'CREATE TABLE first (id int);\n',
      '000001_first.down.sql': 'DROP TABLE first;\n',
      '000002_menu.up.sql': LATIN1.toString('latin1'),
      '000002_menu.down.sql': 'DROP TABLE menu;\n',
    },
  });
  // makeProject writes UTF-8: put the Latin-1 bytes back.
  await fs.writeFile(path.join(ctx.p.migrationsDir, '000002_menu.up.sql'), LATIN1);
  await startProject(ctx.p);
});
live.after(async (ctx) => removeProject(ctx.p));

live('refuses the run naming the file, and applies nothing, not even the valid file before it', async (ctx) => {
  const p = ctx.p!;
  const r = await cli(['db:migrate'], p.env);
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /^error: invalid migrations, nothing was applied:$/m);
  assert.match(r.stderr, /000002_menu\.up\.sql: not valid UTF-8: byte 0xE9 at line 2, column 30/);
  assert.not.ok(await tableExists(p, 'first'));
  assert.not.ok(await tableExists(p, 'menu'));
  assert.equal(await versionRows(p).catch(() => []), []);
});

live.run();

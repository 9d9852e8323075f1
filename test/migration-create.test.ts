import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createMigration } from '@dbkit/core/migrations/create';
import { cli, makeProject, removeProject, type Project } from './setup/project.ts';

interface Ctx {
  p?: Project;
}

const ls = async (p: Project) => (await fs.readdir(p.migrationsDir)).sort();

const create = suite<Ctx>('pnpm db:migrate:create', {});

create.before(async (ctx) => {
  ctx.p = await makeProject({ migrations: {} });
});

create.after(async (ctx) => {
  await removeProject(ctx.p);
});

create('creates the 000001 pair in an empty folder and prints both paths', async (ctx) => {
  const r = await cli(['db:migrate:create', 'add_users'], ctx.p!.env);
  assert.is(r.code, 0, r.stderr);
  assert.equal(await ls(ctx.p!), ['000001_add_users.down.sql', '000001_add_users.up.sql']);
  assert.match(r.stdout, /000001_add_users\.up\.sql/);
  assert.match(r.stdout, /000001_add_users\.down\.sql/);
});

create('takes the number after the highest, while the newest pair is still an unwritten stub', async (ctx) => {
  await fs.writeFile(path.join(ctx.p!.migrationsDir, '000007_old.up.sql'), 'SELECT 1;');
  await fs.writeFile(path.join(ctx.p!.migrationsDir, '000007_old.down.sql'), 'SELECT 1;');
  const r = await cli(['db:migrate:create', 'add_orders'], ctx.p!.env);
  assert.is(r.code, 0, r.stderr);
  assert.ok((await ls(ctx.p!)).includes('000008_add_orders.up.sql'));
  assert.ok((await ls(ctx.p!)).includes('000008_add_orders.down.sql'));
});

create('names the pair with the UTC time, to the second, with --timestamp', async (ctx) => {
  const before = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const r = await cli(['db:migrate:create', '--timestamp', 'stamped'], ctx.p!.env);
  const after = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  assert.is(r.code, 0, r.stderr);
  const made = (await ls(ctx.p!)).filter((f) => f.includes('_stamped.'));
  assert.is(made.length, 2);
  const v = made[0].split('_')[0];
  assert.match(v, /^\d{14}$/);
  assert.ok(v >= before && v <= after, `${v} not within ${before}..${after}`);
});

create('refuses to overwrite, and leaves neither file when the second cannot be written', async (ctx) => {
  const p = ctx.p!;
  const versions = (await ls(p)).map((f) => Number(f.split('_')[0]));
  const next = String(Math.max(...versions) + 1).padStart(6, '0');
  // Something already at the down file's path (a directory: the scan of names does not count it).
  await fs.mkdir(path.join(p.migrationsDir, `${next}_clash.down.sql`));
  const r = await cli(['db:migrate:create', 'clash'], p.env);
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, new RegExp(`${next}_clash\\.down\\.sql already exists`));
  assert.not.ok(await fs.stat(path.join(p.migrationsDir, `${next}_clash.up.sql`)).catch(() => undefined), 'the up file was left behind');
});

create('refuses a name that is not letters, digits and underscores, as a usage error', async (ctx) => {
  const before = await ls(ctx.p!);
  const r = await cli(['db:migrate:create', 'drop users!'], ctx.p!.env);
  assert.is(r.code, 2);
  assert.equal(await ls(ctx.p!), before);
});

create.run();

interface LibCtx {
  dir: string;
}

const lib = suite<LibCtx>('createMigration', { dir: '' });

lib.before.each(async (ctx) => {
  ctx.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'migcreate-'));
});

lib.after.each(async (ctx) => {
  await fs.rm(ctx.dir, { recursive: true, force: true });
});

lib('refuses a second --timestamp pair in the same second, whatever its name, and keeps the first intact', async (ctx) => {
  const clock = () => new Date('2025-01-02T03:04:05.600Z');
  const first = await createMigration({ fs, clock }, ctx.dir, 'one', true);
  assert.equal(
    first.map((f) => path.basename(f)),
    ['20250102030405_one.up.sql', '20250102030405_one.down.sql'],
  );
  await fs.writeFile(first[0], 'CREATE TABLE one (id int);');
  try {
    await createMigration({ fs, clock }, ctx.dir, 'two', true);
    assert.unreachable('created a duplicate version');
  } catch (e) {
    assert.match((e as Error).message, /20250102030405 is already taken/);
  }
  assert.equal((await fs.readdir(ctx.dir)).sort(), ['20250102030405_one.down.sql', '20250102030405_one.up.sql']);
  assert.is(await fs.readFile(first[0], 'utf8'), 'CREATE TABLE one (id int);');
});

lib.run();

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cli, ok, removeProject, startProject, type Project } from './setup/project.ts';
import { backupProject, ownerQuery } from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

const MIGRATIONS = {
  '000001_seed_log.up.sql':
    'CREATE TABLE seed_log (n serial PRIMARY KEY, file text NOT NULL);\nCREATE TABLE colours (name text PRIMARY KEY);',
  '000001_seed_log.down.sql': 'DROP TABLE colours;\nDROP TABLE seed_log;',
};

// Each seed notes that it ran; the second reads what the first wrote, so order matters.
const SEEDS = {
  '010_colours.sql':
    "INSERT INTO colours VALUES ('red'), ('green') ON CONFLICT DO NOTHING;\nINSERT INTO seed_log (file) VALUES ('010_colours.sql');",
  '020_more.sql':
    "INSERT INTO colours SELECT 'dark ' || name FROM colours WHERE name NOT LIKE 'dark %' ON CONFLICT DO NOTHING;\nINSERT INTO seed_log (file) VALUES ('020_more.sql');",
};

const log = async (p: Project) => (await ownerQuery(p, 'SELECT file FROM seed_log ORDER BY n')).map((r) => r.file);
const colours = async (p: Project) => (await ownerQuery(p, 'SELECT name FROM colours ORDER BY name')).map((r) => r.name);

const seeds = suite<{ p?: Project }>('seeds run once each, in name order, on a migrated schema only');

setUp(seeds, async (ctx) => {
  ctx.p = await backupProject({ migrations: MIGRATIONS });
  // Written out of order on purpose: the name decides, not the directory listing.
  for (const name of Object.keys(SEEDS).reverse()) await fs.writeFile(path.join(ctx.p.seedsDir, name), SEEDS[name as keyof typeof SEEDS]);
  await fs.writeFile(path.join(ctx.p.seedsDir, 'README.md'), 'not a seed');
  await startProject(ctx.p);
});

seeds.after(async (ctx) => {
  await removeProject(ctx.p);
});

seeds('db:seed refuses while migrations are pending, and runs nothing', async (ctx) => {
  const p = ctx.p!;
  failsClearly(await cli(['db:seed'], p.env), /1 migration\(s\) are pending/, { hint: /db:migrate/ });
  const exists = await ownerQuery(p, "SELECT to_regclass('public.schema_seeds') IS NOT NULL AS t");
  assert.is(exists[0].t, false, 'not even its bookkeeping table was made');
});

seeds('db:seed applies the .sql files in name order, and a second run changes nothing', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:migrate'], p.env);
  const first = await ok(['db:seed'], p.env);
  assert.match(first.stdout, /applied 2 seed\(s\): 010_colours\.sql, 020_more\.sql/);
  assert.equal(await log(p), ['010_colours.sql', '020_more.sql']);
  assert.equal(await colours(p), ['dark green', 'dark red', 'green', 'red']);
  const second = await ok(['db:seed'], p.env);
  assert.match(second.stdout, /^no change$/m);
  assert.equal(await log(p), ['010_colours.sql', '020_more.sql'], 'each ran once');
});

seeds('--reseed runs them all again, in order', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:seed', '--reseed'], p.env);
  assert.equal(await log(p), ['010_colours.sql', '020_more.sql', '010_colours.sql', '020_more.sql']);
});

seeds('a new migration file makes db:seed refuse again until it is applied', async (ctx) => {
  const p = ctx.p!;
  await fs.writeFile(path.join(p.migrationsDir, '000002_shapes.up.sql'), 'CREATE TABLE shapes (name text);');
  await fs.writeFile(path.join(p.migrationsDir, '000002_shapes.down.sql'), 'DROP TABLE shapes;');
  await fs.writeFile(path.join(p.seedsDir, '030_shapes.sql'), "INSERT INTO shapes VALUES ('circle');");
  failsClearly(await cli(['db:seed'], p.env), /pending/);
  assert.equal((await log(p)).length, 4, 'nothing ran');
  await ok(['db:migrate'], p.env);
  const r = await ok(['db:seed'], p.env);
  assert.match(r.stdout, /applied 1 seed\(s\): 030_shapes\.sql/, 'only the new seed runs');
});

seeds('db:fresh --seed --yes rebuilds, migrates and seeds each file once', async (ctx) => {
  const p = ctx.p!;
  const r = await ok(['db:fresh', '--seed', '--yes'], p.env);
  assert.match(r.stderr, /seeded: 010_colours\.sql, 020_more\.sql, 030_shapes\.sql/);
  assert.equal(await log(p), ['010_colours.sql', '020_more.sql']);
  const recorded = await ownerQuery(p, 'SELECT name FROM schema_seeds ORDER BY name');
  assert.equal(
    recorded.map((x) => x.name),
    ['010_colours.sql', '020_more.sql', '030_shapes.sql'],
  );
});

seeds.run();

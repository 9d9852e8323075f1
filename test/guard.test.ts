import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cli, ok, removeProject, startProject, type Project } from './setup/project.ts';
import { backupDirState, backupProject, ownerQuery, suQuery } from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

interface Ctx {
  p?: Project;
  backup?: string;
}

const rows = async (p: Project) => (await ownerQuery(p, 'SELECT count(*)::int AS n FROM accounts'))[0].n as number;
const version = async (p: Project) => (await ownerQuery(p, 'SELECT version FROM schema_migrations'))[0]?.version;

/** Every destructive task, as a user would type it, with what it needs besides confirmation. */
const destructive = (backup: string): string[][] => [
  ['db:fresh'],
  ['db:delete'],
  ['db:restore', backup],
  ['db:migrate:force', '1'],
  ['db:rollback'],
];

async function dataStillThere(p: Project, expectRows: number) {
  assert.is(await rows(p), expectRows, 'the rows are still there');
  assert.is(Number(await version(p)), 1, 'the migration version is unchanged');
}

// ---------------------------------------------------------------------------------------------
const prod = suite<Ctx>('a database recorded as production refuses destructive tasks without --force-production');

setUp(prod, async (ctx) => {
  ctx.p = await backupProject();
  await ok(['db:secrets'], ctx.p.env);
  await ok(['db:secure'], ctx.p.env);
  // The first deploy, run as production, records it in the database.
  await ok(['db:up'], { ...ctx.p.env, NODE_ENV: 'production' });
  await ok(['db:migrate'], ctx.p.env);
  await ownerQuery(ctx.p, "INSERT INTO accounts (email) SELECT 'p' || i || '@example.com' FROM generate_series(1, 25) i");
  const b = await ok(['db:backup', '--verify', '--json'], ctx.p.env);
  ctx.backup = JSON.parse(b.stdout).name;
});

prod.after(async (ctx) => {
  await removeProject(ctx.p);
});

prod('db:up records the environment of the first deploy; a later development run does not overwrite it', async (ctx) => {
  await ok(['db:up'], { ...ctx.p!.env, NODE_ENV: 'development' });
  const r = await suQuery(ctx.p!, 'SELECT name FROM pgdeploy.environment');
  assert.equal(r, [{ name: 'production' }]);
});

prod('the application role cannot read or change the recorded environment', async (ctx) => {
  const { appTarget } = await import('./setup/project.ts');
  const { withClient } = await import('@dbkit/core/pg');
  const err = await withClient(await appTarget(ctx.p!), (c) =>
    c.query("UPDATE pgdeploy.environment SET name = 'development'").then(
      () => undefined,
      (e) => e as Error,
    ),
  );
  assert.match(String(err?.message), /permission denied/);
});

prod('every destructive task, even with --yes, exits non-zero, names the override, and the data is still there', async (ctx) => {
  const p = ctx.p!;
  const backupsBefore = await backupDirState(p);
  for (const args of destructive(ctx.backup!).map((a) => [...a, '--yes'])) {
    const r = await cli(args, p.env);
    failsClearly(r, new RegExp(`${args[0]} refused: the database is recorded as production`), { hint: /--force-production/ });
    await dataStillThere(p, 25);
  }
  assert.equal(await backupDirState(p), backupsBefore, 'not even a safety backup was taken');
});

prod('with --force-production but no terminal and no --yes, each destructive task still refuses and changes nothing', async (ctx) => {
  const p = ctx.p!;
  for (const args of destructive(ctx.backup!)) {
    const r = await cli([...args, '--force-production'], p.env);
    failsClearly(r, /needs confirmation and there is no terminal/, { hint: /--yes/ });
    await dataStillThere(p, 25);
  }
});

prod('db:rollback --force-production runs, and who and when are logged in the database and beside the backups', async (ctx) => {
  const p = ctx.p!;
  const before = new Date();
  const r = await ok(['db:rollback', '--force-production', '--yes'], { ...p.env, SUDO_USER: 'alice' });
  const after = new Date();
  assert.match(r.stderr, /forced by .*alice.*logged/);
  const audit = await suQuery(p, 'SELECT task, environment, os_user, detail, at FROM pgdeploy.audit');
  assert.is(audit.length, 1);
  assert.is(audit[0].task, 'db:rollback');
  assert.is(audit[0].environment, 'production');
  assert.is(audit[0].os_user, `${os.userInfo().username} (sudo by alice)`);
  assert.is(audit[0].detail, 'down 1');
  // When: the moment of the run, recorded by the server (its clock is this machine's).
  const at = new Date(audit[0].at as Date);
  assert.ok(at >= new Date(before.getTime() - 1000) && at <= after, `when: ${at.toISOString()}`);
  const lines = (await fs.readFile(path.join(p.env.DB_BACKUP_DIR, 'audit.log'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(
    lines.map((l) => l.task),
    ['db:rollback'],
  );
  // The roll-back dropped the table: put it and its rows back for the tests that follow.
  await ok(['db:migrate'], p.env);
  await ownerQuery(p, "INSERT INTO accounts (email) SELECT 'p' || i || '@example.com' FROM generate_series(1, 25) i");
});

prod('NODE_ENV=production alone is enough to refuse, on a database recorded as development', async (ctx) => {
  const p = ctx.p!;
  await suQuery(p, "UPDATE pgdeploy.environment SET name = 'development'");
  try {
    failsClearly(await cli(['db:migrate:force', '1', '--yes'], { ...p.env, NODE_ENV: 'production' }), /refused: NODE_ENV is production/);
    await ok(['db:migrate:force', '1', '--yes'], p.env); // development, development: allowed
  } finally {
    await suQuery(p, "UPDATE pgdeploy.environment SET name = 'production'");
  }
});

prod('if the safety backup cannot be written, db:delete --force-production deletes nothing', async (ctx) => {
  const p = ctx.p!;
  const blocker = path.join(p.dir, 'a-file');
  await fs.writeFile(blocker, 'not a directory');
  const r = await cli(['db:delete', '--yes', '--force-production'], { ...p.env, DB_BACKUP_DIR: path.join(blocker, 'backups') });
  failsClearly(r, /the safety backup failed, so nothing was deleted/);
  await dataStillThere(p, 25);
});

prod('db:delete --dry-run lists the databases and what is kept, and deletes nothing', async (ctx) => {
  const p = ctx.p!;
  const r = await ok(['db:delete', '--dry-run'], p.env);
  assert.match(r.stdout, /database app \(\d+ [kM]B\)/);
  assert.match(r.stdout, /storage: the native data directory/);
  assert.match(r.stdout, /kept: the backups/);
  await dataStillThere(p, 25);
});

prod('a stopped server with data is not deleted without both --no-backup and --force-production', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:down'], p.env);
  failsClearly(await cli(['db:delete', '--yes'], p.env), /PostgreSQL is stopped, so no safety backup can be taken/, {
    hint: /--no-backup --force-production/,
  });
  failsClearly(await cli(['db:delete', '--yes', '--no-backup'], p.env), /PostgreSQL is stopped/);
  await ok(['db:up'], p.env);
  await dataStillThere(p, 25);
});

prod('db:delete --yes --force-production takes a safety backup first, then deletes', async (ctx) => {
  const p = ctx.p!;
  const before = (await backupDirState(p)).finished;
  await ok(['db:delete', '--yes', '--force-production'], p.env);
  const after = (await backupDirState(p)).finished;
  const safety = after.filter((n) => !before.includes(n));
  assert.is(safety.length, 1);
  assert.match(safety[0], /-before-delete$/);
  const manifest = JSON.parse(await fs.readFile(path.join(p.env.DB_BACKUP_DIR, safety[0], 'manifest.json'), 'utf8'));
  assert.is(manifest.data['table public.accounts'], '25', 'the safety backup holds the rows');
  assert.not.ok(
    await fs.stat(p.nativeDir).then(
      () => true,
      () => false,
    ),
    'the data directory is gone',
  );
  const audit = (await fs.readFile(path.join(p.env.DB_BACKUP_DIR, 'audit.log'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.is(audit[audit.length - 1].task, 'db:delete');
});

prod('a forced db:fresh of a production database leaves the rebuilt one recorded as production', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:up'], { ...p.env, NODE_ENV: 'production' }); // a new cluster after the delete above, recorded as production
  await ok(['db:fresh', '--yes', '--force-production', '--no-backup'], p.env); // run from a development shell
  assert.equal(await suQuery(p, 'SELECT name FROM pgdeploy.environment'), [{ name: 'production' }]);
  assert.equal(
    (await suQuery(p, 'SELECT task FROM pgdeploy.audit')).map((r) => r.task),
    ['db:fresh'],
    'the forced run is logged in the new database',
  );
});

prod('a forced db:restore of a development backup over a production database leaves it recorded as production', async (ctx) => {
  const p = ctx.p!;
  await suQuery(p, "UPDATE pgdeploy.environment SET name = 'development'");
  const b = JSON.parse((await ok(['db:backup', '--verify', '--json'], p.env)).stdout).name;
  await suQuery(p, "UPDATE pgdeploy.environment SET name = 'production'");
  await ok(['db:restore', b, '--yes', '--force-production', '--no-backup'], p.env);
  assert.equal(await suQuery(p, 'SELECT name FROM pgdeploy.environment'), [{ name: 'production' }]);
});

prod.run();

// ---------------------------------------------------------------------------------------------
const dev = suite<Ctx>('a development database: destructive tasks still ask, and refuse without a terminal');

setUp(dev, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p);
  await ok(['db:migrate'], ctx.p.env);
  await ownerQuery(ctx.p, "INSERT INTO accounts (email) VALUES ('d1@example.com'), ('d2@example.com')");
  ctx.backup = JSON.parse((await ok(['db:backup', '--verify', '--json'], ctx.p.env)).stdout).name;
});

dev.after(async (ctx) => {
  await removeProject(ctx.p);
});

dev('with no terminal and no --yes, every destructive task exits non-zero and the data is still there', async (ctx) => {
  const p = ctx.p!;
  for (const args of destructive(ctx.backup!)) {
    failsClearly(await cli(args, p.env), /needs confirmation and there is no terminal to ask/, { hint: new RegExp(`${args[0]}.*--yes`) });
    await dataStillThere(p, 2);
  }
});

dev('db:fresh --yes takes a safety backup, rebuilds and migrates', async (ctx) => {
  const p = ctx.p!;
  const r = await ok(['db:fresh', '--yes'], p.env);
  assert.match(r.stderr, /safety backup: .*-before-fresh/);
  assert.is(await rows(p), 0);
  assert.is(Number(await version(p)), 1);
});

dev('db:fresh records the environment again in the rebuilt database', async (ctx) => {
  assert.equal(await suQuery(ctx.p!, 'SELECT name FROM pgdeploy.environment'), [{ name: 'development' }]);
});

dev.run();

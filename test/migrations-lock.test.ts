import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Client } from 'pg';
import { connect } from '@dbkit/core/pg';
import { advisoryLockKey } from '@dbkit/core/migrations/lock';
import { appTarget, cli, makeProject, removeProject, startProject, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';
import { output, spawnCli, tableExists, until } from './setup/engine.ts';

interface Ctx {
  p?: Project;
  holder?: Client;
}

const lock = suite<Ctx>('db:migrate waiting for the migration lock', {});

setUp(lock, async (ctx) => {
  ctx.p = await makeProject();
  await startProject(ctx.p);
});
lock.after(async (ctx) => {
  await ctx.holder?.end().catch(() => {});
  await removeProject(ctx.p);
});

lock("gives up after DB_MIGRATE_LOCK_TIMEOUT, naming the holder's pid and application, and applies nothing", async (ctx) => {
  const p = ctx.p!;
  ctx.holder = await connect({ ...(await appTarget(p)), applicationName: 'deploy-from-laptop' });
  const { db, pid } = (await ctx.holder.query('SELECT current_database() AS db, pg_backend_pid() AS pid')).rows[0];
  // The key golang-migrate's container takes for this database: holding it is what a running
  // migrate/migrate does.
  await ctx.holder.query('SELECT pg_advisory_lock($1)', [advisoryLockKey('/' + db)]);
  const r = await cli(['db:migrate'], { ...p.env, DB_MIGRATE_LOCK_TIMEOUT: '1' });
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /error: another migration has held the migration lock \(key \d+\) for more than 1s/);
  assert.match(r.stderr, new RegExp(`pid ${pid}\\b`));
  assert.match(r.stderr, /application "deploy-from-laptop"/);
  assert.match(r.stderr, /hint: .*DB_MIGRATE_LOCK_TIMEOUT/);
  assert.not.ok(await tableExists(p, 'accounts'));
});

lock('names one of our own runners holding it, and since when it holds it', async (ctx) => {
  const p = ctx.p!;
  await ctx.holder!.query(`SELECT pg_advisory_unlock_all(); SET application_name = 'other'`);
  const files = { '000002_wait.up.sql': 'SELECT pg_sleep(30);\n', '000002_wait.down.sql': 'SELECT 1;\n' };
  for (const [n, sql] of Object.entries(files)) await fs.writeFile(path.join(p.migrationsDir, n), sql);
  const first = spawnCli(['db:migrate'], p.env);
  try {
    // Another role sees a session's application name, not its query.
    await until(
      'the first runner to take the lock',
      30_000,
      async () =>
        (await ctx.holder!.query(`SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'pg-deploy migrate, lock held since %'`)).rows
          .length > 0,
    );
    const r = await cli(['db:migrate'], { ...p.env, DB_MIGRATE_LOCK_TIMEOUT: '1' });
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /application "pg-deploy migrate, lock held since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"/);
  } finally {
    first.child.kill('SIGKILL');
    await first.done;
  }
  for (const n of Object.keys(files)) await fs.rm(path.join(p.migrationsDir, n));
  // The killed runner's backend ends within a second or so (it checks its client), freeing the lock.
  await until(
    "the killed runner's session to end",
    30_000,
    async () =>
      (await ctx.holder!.query(`SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'pg-deploy migrate%'`)).rows.length === 0,
  );
});

lock('goes ahead once the holder lets go', async (ctx) => {
  const p = ctx.p!;
  await ctx.holder!.end();
  ctx.holder = undefined;
  const r = await cli(['db:migrate'], { ...p.env, DB_MIGRATE_LOCK_TIMEOUT: '1' });
  assert.is(r.code, 0, output(r));
  assert.ok(await tableExists(p, 'accounts'));
});

lock.run();

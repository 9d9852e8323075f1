import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Client } from 'pg';
import { connect } from '@dbkit/core/pg';
import { appTarget, cli, makeProject, ownerTarget, removeProject, startProject, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';
import { output, query, spawnCli, until, versionRows } from './setup/engine.ts';

interface Ctx {
  p?: Project;
  sessions: Client[];
}

// ALTER TABLE ... ADD COLUMN needs ACCESS EXCLUSIVE: it waits for every transaction that read the
// table, and every reader that comes after it waits behind it.
const ALTER = {
  '000002_nickname.up.sql': 'ALTER TABLE accounts ADD COLUMN nickname text;\n',
  '000002_nickname.down.sql': 'ALTER TABLE accounts DROP COLUMN nickname;\n',
};
const SHORT = { DB_MIGRATE_STATEMENT_LOCK_TIMEOUT: '1' };

const locks = suite<Ctx>('a migration waiting for a table lock', { sessions: [] });

setUp(locks, async (ctx) => {
  ctx.p = await makeProject();
  await startProject(ctx.p, { migrate: [] });
  for (const [n, sql] of Object.entries(ALTER)) await fs.writeFile(path.join(ctx.p.migrationsDir, n), sql);
});
locks.after(async (ctx) => {
  for (const s of ctx.sessions) await s.end().catch(() => {});
  await removeProject(ctx.p);
});
locks.after.each(async (ctx) => {
  for (const s of ctx.sessions.splice(0)) await s.end().catch(() => {});
});

/** A session that read `accounts` in a transaction it keeps open: what a slow report or a forgotten psql does. */
async function reader(ctx: Ctx, login: 'app' | 'owner', name: string): Promise<{ c: Client; pid: number }> {
  const c = await connect({ ...(login === 'app' ? await appTarget(ctx.p!) : await ownerTarget(ctx.p!)), applicationName: name });
  ctx.sessions.push(c);
  await c.query('BEGIN; SELECT count(*) FROM accounts');
  return { c, pid: (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid };
}

const hasNickname = async (p: Project) =>
  (await query(p, `SELECT 1 FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'nickname'`)).length > 0;

locks('gives up after its own lock timeout and its retries, naming each blocking session, and applies nothing', async (ctx) => {
  const p = ctx.p!;
  const report = await reader(ctx, 'app', 'report-job');
  const consoleSession = await reader(ctx, 'owner', 'owner-console');
  // A bound on a hang (the server's own lock_timeout is 60 s), not a timing assertion.
  const r = await cli(['db:migrate'], { ...p.env, ...SHORT, DB_MIGRATE_STATEMENT_LOCK_RETRIES: '1' }, { timeoutMs: 45_000 });
  assert.is(r.code, 1, output(r));
  assert.match(
    r.stderr,
    /^warning: 000002_nickname\.up\.sql waited more than 1s for a lock \(AccessExclusiveLock on accounts\) held by .*; rolled back, trying again in 0\.5s \(try 2 of 2\)$/m,
  );
  assert.match(
    r.stderr,
    /^error: 000002_nickname\.up\.sql: waited more than 1s for a lock \(AccessExclusiveLock on accounts\) on each of 2 tries, held by /m,
  );
  // The application's session: its pid and name; its state is not the migration role's to see.
  assert.match(
    r.stderr,
    new RegExp(
      `pid ${report.pid}, application "report-job", user app \\(its state and query start are hidden from app_owner, which is not in pg_read_all_stats\\)`,
    ),
  );
  // The migration role's own session: its state and when its query began too.
  assert.match(
    r.stderr,
    new RegExp(
      `pid ${consoleSession.pid}, application "owner-console", user app_owner from 127\\.0\\.0\\.1, state idle in transaction, query started \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z`,
    ),
  );
  assert.match(
    r.stderr,
    /^hint: nothing of 000002_nickname\.up\.sql was applied \(it ran in a transaction, rolled back each time\); the version is still 1, not dirty\. Let that session finish or end it \(SELECT pg_terminate_backend\(\d+\)\).*DB_MIGRATE_STATEMENT_LOCK_TIMEOUT/m,
  );
  assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
  assert.not.ok(await hasNickname(p));
});

locks('lets readers through between its tries, and goes ahead once the holder lets go', async (ctx) => {
  const p = ctx.p!;
  const report = await reader(ctx, 'app', 'report-job');
  const run = spawnCli(['db:migrate'], { ...p.env, ...SHORT, DB_MIGRATE_STATEMENT_LOCK_RETRIES: '20' });
  let stderr = '';
  run.child.stderr!.on('data', (d) => (stderr += d));
  try {
    await until('the runner to say it tries again', 40_000, async () => /trying again/.test(stderr));
    // The holder still holds its lock: a new reader gets through all the same, at the latest when
    // the waiting ALTER times out (the server's 60 s would block it for up to a minute).
    const other = await connect({ ...(await appTarget(p)), applicationName: 'late-reader' });
    ctx.sessions.push(other);
    const read = other.query('SELECT count(*) FROM accounts').then(() => true);
    const bound = new Promise<boolean>((r) => setTimeout(() => r(false), 30_000).unref());
    assert.ok(await Promise.race([read, bound]), 'a reader stayed blocked behind the waiting migration');
    await report.c.query('COMMIT');
    const r = await run.done;
    assert.is(r.code, 0, output(r));
  } finally {
    run.child.kill('SIGKILL');
    await run.done;
  }
  assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
  assert.ok(await hasNickname(p));
});

locks.run();

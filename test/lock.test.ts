import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Client } from 'pg';
import { connect } from '@dbkit/core/pg';
import { acquireLock, advisoryLockKey, generateAdvisoryLockId, holderName, releaseLock } from '@dbkit/core/migrations/lock';
import { makeProject, ownerTarget, removeProject, startProject, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// Expected values come from golang-migrate's source (v4.18.3): database/util_test.go for the
// generic vectors; for the CLI's key, postgres.go passes (URL path "/app", current_schema(), table).
const key = suite('golang-migrate advisory lock key');

key("matches golang-migrate's own test vectors for GenerateAdvisoryLockId", () => {
  assert.is(generateAdvisoryLockId('database_name'), 1764327054);
  assert.is(generateAdvisoryLockId('database_name', 'schema_name_1'), 2453313553);
  assert.is(generateAdvisoryLockId('database_name', 'schema_name_2'), 235207038);
  assert.is(generateAdvisoryLockId('database_name', 'schema_name_1', 'schema_name_2'), 3743845847);
});

key('gives 1726534663 for public, schema_migrations and /app, the key the migrate/migrate CLI takes', () => {
  assert.is(advisoryLockKey('/app'), 1726534663);
  assert.is(advisoryLockKey('/app', 'public', 'schema_migrations'), 1726534663);
});

key("depends on the leading slash, the schema and the table, as golang-migrate's does", () => {
  assert.is.not(advisoryLockKey('app'), advisoryLockKey('/app'));
  assert.is.not(advisoryLockKey('/app', 'other'), advisoryLockKey('/app'));
  assert.is.not(advisoryLockKey('/app', 'public', 'other_migrations'), advisoryLockKey('/app'));
});

key("stays within PostgreSQL's bigint and golang-migrate's uint32 for non-ASCII names", () => {
  const k = advisoryLockKey('/Ωmega', 'schéma');
  assert.ok(Number.isInteger(k) && k >= 0 && k <= 0xffffffff);
});

key.run();

interface ServerCtx {
  p?: Project;
  runner?: Client;
  other?: Client;
  key?: number;
}

const held = suite<ServerCtx>('the migration lock on a real server', {});

setUp(held, async (ctx) => {
  ctx.p = await makeProject();
  await startProject(ctx.p);
  ctx.runner = await connect(await ownerTarget(ctx.p));
  ctx.other = await connect({ ...(await ownerTarget(ctx.p)), applicationName: 'other runner' });
  const { db } = (await ctx.runner.query('SELECT current_database() AS db')).rows[0];
  ctx.key = advisoryLockKey('/' + db);
});
held.after(async (ctx) => {
  await ctx.runner?.end().catch(() => {});
  await ctx.other?.end().catch(() => {});
  await removeProject(ctx.p);
});

/** The pid holding the advisory lock on `key`, as pg_locks shows it to everyone. */
async function holder(c: Client, key: number): Promise<number | undefined> {
  const { rows } = await c.query(
    `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = $1::bigint::oid AND objsubid = 1`,
    [key],
  );
  return rows[0]?.pid;
}

held("acquireLock takes golang-migrate's session lock on the key, and releaseLock lets it go", async (ctx) => {
  const { runner, other, key } = ctx as Required<ServerCtx>;
  const pid = (await runner.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await acquireLock(runner, key, 1000);
  assert.is(await holder(other, key), pid);
  await releaseLock(runner, key);
  assert.is(await holder(other, key), undefined);
});

held('a second session gives up after its timeout, naming the holder; it gets the lock once released', async (ctx) => {
  const { runner, other, key } = ctx as Required<ServerCtx>;
  await other.query(`SET application_name = ${other.escapeLiteral(holderName(new Date('2026-01-02T03:04:05Z')))}`);
  await acquireLock(other, key, 1000);
  try {
    await acquireLock(runner, key, 300);
    assert.unreachable('should time out');
  } catch (e) {
    assert.match((e as Error).message, `another migration has held the migration lock (key ${key}) for more than 0.3s`);
    assert.match((e as Error).message, 'application "pg-deploy migrate, lock held since 2026-01-02T03:04:05Z"');
  }
  await releaseLock(other, key);
  await acquireLock(runner, key, 1000);
  await releaseLock(runner, key);
  assert.is(await holder(other, key), undefined);
});

held.run();

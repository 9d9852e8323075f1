import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Client } from 'pg';
import { connect, withClient } from '@dbkit/core/pg';
import { loadMigrations } from '@dbkit/core/migrations/files';
import { advisoryLockKey } from '@dbkit/core/migrations/lock';
import type { Command } from '@dbkit/core/migrations/plan';
import { migrate, type MigrateResult } from '@dbkit/core/migrations/runner';
import { HISTORY_TABLE } from '@dbkit/core/migrations/state';
import {
  cli,
  ok,
  engineSuite,
  withStartedDockerProject,
  makeDockerProject,
  removeDockerProject,
  startDockerProject,
  type DockerProject,
} from './setup/docker.ts';
import { setUp } from './setup/hooks.ts';
import { testCtx } from './setup/ctx.ts';
import { appTarget } from './setup/project.ts';
import { existingTables, output, query, spawnCli, tableExists, until, versionRows } from './setup/engine.ts';

// One database, two runners: the real golang-migrate v4.18.3 (the db-migrate service, through the
// tasks with DB_RUNTIME=docker) and our runner (packages/core's migrate(), called here directly on a
// verified-TLS connection to the same api-db as the migration role: DB_RUNTIME=native would start a
// server of its own). They share golang-migrate's table and its advisory lock key.

const FOUR: Record<string, string> = {
  '000001_alpha.up.sql': 'CREATE TABLE alpha (id int PRIMARY KEY);\n',
  '000001_alpha.down.sql': 'DROP TABLE alpha;\n',
  '000002_beta.up.sql': 'CREATE TABLE beta (id int PRIMARY KEY);\n',
  '000002_beta.down.sql': 'DROP TABLE beta;\n',
  '000003_gamma.up.sql': 'CREATE TABLE gamma (id int PRIMARY KEY);\nINSERT INTO gamma VALUES (1);\n',
  '000003_gamma.down.sql': 'DROP TABLE gamma;\n',
  '000004_delta.up.sql': 'CREATE TABLE delta (id int PRIMARY KEY);\n',
  '000004_delta.down.sql': 'DROP TABLE delta;\n',
};
const TABLES = ['alpha', 'beta', 'gamma', 'delta'];

/** The key facts.md gives for public/schema_migrations and the database "app" (the URL path "/app"). */
const GOLANG_MIGRATE_KEY_FOR_APP = 1726534663;

interface Ctx {
  p?: DockerProject;
  holder?: Client;
}

const tables = (p: DockerProject) => existingTables(p, TABLES);

/** Our runner on the project's api-db, as the migration role over verified TLS to 127.0.0.1. */
async function ours(
  p: DockerProject,
  cmd: Command,
  opts: { lockTimeoutMs?: number; applicationName?: string } = {},
): Promise<MigrateResult> {
  const t = { ...(await appTarget(p, '127.0.0.1', 'migrate')), applicationName: opts.applicationName ?? 'pg-deploy migrate (test)' };
  return withClient(t, (c) =>
    migrate(testCtx(p.env), c, loadMigrations(p.migrationsDir, { texts: 'later' }), cmd, { lockTimeoutMs: opts.lockTimeoutMs ?? 15_000 }),
  );
}

/** Our runner's failure (it must fail): its message and hint. */
async function oursFails(
  p: DockerProject,
  cmd: Command,
  opts: { lockTimeoutMs?: number } = {},
): Promise<{ message: string; hint: string }> {
  try {
    await ours(p, cmd, opts);
  } catch (e) {
    return { message: (e as Error).message, hint: (e as { hint?: string }).hint ?? '' };
  }
  throw new Error(`our runner did ${JSON.stringify(cmd)} when it should have failed`);
}

const history = async (p: DockerProject) =>
  (await query<{ version: string }>(p, `SELECT version FROM ${HISTORY_TABLE} ORDER BY version`)).map((r) => Number(r.version));

interface StatusJson {
  version: number | null;
  dirty: boolean;
  applied: { version: number; unrecorded?: boolean; edited?: boolean; dirty?: boolean }[];
  pending: { version: number }[];
  problem?: string;
  fix?: string;
}

/** db:status --json (docker runtime), and its warnings. */
async function status(p: DockerProject): Promise<StatusJson & { stderr: string }> {
  const r = await cli(['db:status', '--json'], p.env);
  assert.is(r.code, 0, output(r));
  return { ...JSON.parse(r.stdout), stderr: r.stderr };
}

/** Every applied file plain: not flagged as never applied, edited, or dirty; no warning printed. */
function cleanHistory(s: StatusJson & { stderr: string }, applied: number[], pending: number[]) {
  assert.equal(
    s.applied.map((e) => e.version),
    applied,
  );
  assert.equal(
    s.pending.map((e) => e.version),
    pending,
  );
  assert.equal(
    s.applied.filter((e) => e.unrecorded || e.edited || e.dirty).map((e) => e.version),
    [],
    JSON.stringify(s.applied),
  );
  assert.not.match(s.stderr, /never applied|edited after/i);
}

// ---------------------------------------------------------------------------------------------
const gmFirst = engineSuite<Ctx>('golang-migrate first, then our runner, on one database');

if (gmFirst) {
  withStartedDockerProject(gmFirst, FOUR);

  gmFirst('golang-migrate applies 1 and 2; our runner reads its row and applies 3 on top', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate', 'up', '2'], p.env);
    assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
    const r = await ours(p, { kind: 'up', n: 1 });
    assert.equal([r.from, r.to, r.steps.map((s) => s.version)], [2, 3, [3]]);
    assert.equal(await versionRows(p), [{ version: 3, dirty: false }]);
    assert.equal(await tables(p), ['alpha', 'beta', 'gamma']);
    assert.equal(await history(p), [3]);
    cleanHistory(await status(p), [1, 2, 3], [4]);
  });

  gmFirst('golang-migrate rolls back the migration our runner applied, and applies it again', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate', '--yes', 'down', '1'], p.env);
    assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
    assert.equal(await tables(p), ['alpha', 'beta']);
    cleanHistory(await status(p), [1, 2], [3, 4]);
    await ok(['db:migrate', 'up', '1'], p.env);
    assert.equal(await versionRows(p), [{ version: 3, dirty: false }]);
    assert.equal(await tables(p), ['alpha', 'beta', 'gamma']);
    cleanHistory(await status(p), [1, 2, 3], [4]);
    // Nothing left for either of them up to 3: ours agrees.
    const r = await ours(p, { kind: 'goto', version: 3 });
    assert.equal([r.from, r.to, r.steps.length], [3, 3, 0]);
  });

  gmFirst("a dirty row golang-migrate leaves stops our runner with golang-migrate's words and the right force command", async (ctx) => {
    const p = ctx.p!;
    await fs.writeFile(path.join(p.migrationsDir, '000004_delta.up.sql'), 'CREATE TABLE delta (id int PRIMARY KEY);\nSELECT 1/0;\n');
    const r = await cli(['db:migrate'], p.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /division by zero/);
    assert.equal(await versionRows(p), [{ version: 4, dirty: true }]);
    const e = await oursFails(p, { kind: 'up' });
    assert.match(e.message, /^Dirty database version 4\. Fix and force version\.$/m);
    assert.match(e.message, /000004_delta\.up\.sql stopped part-way; its objects look not applied/);
    assert.is(e.hint, 'nothing of it is there: pnpm db:migrate:force 3, then pnpm db:migrate');
    assert.equal(await versionRows(p), [{ version: 4, dirty: true }]);
  });

  gmFirst('our runner forces 3, and a dirty row our runner leaves stops golang-migrate in turn', async (ctx) => {
    const p = ctx.p!;
    await ours(p, { kind: 'force', version: 3 });
    assert.equal(await versionRows(p), [{ version: 3, dirty: false }]);
    // Outside a transaction, our runner follows golang-migrate's protocol: (4, dirty) first.
    await fs.writeFile(
      path.join(p.migrationsDir, '000004_delta.up.sql'),
      'CREATE INDEX CONCURRENTLY delta_idx ON gamma (no_such_column);\n',
    );
    const e = await oursFails(p, { kind: 'up' });
    assert.match(e.message, /runs outside a transaction, so the database is left dirty at version 4, as golang-migrate leaves it/);
    assert.equal(await versionRows(p), [{ version: 4, dirty: true }]);
    const r = await cli(['db:migrate'], p.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /^error: Dirty database version 4\. Fix and force version\.$/m);
    assert.equal(await versionRows(p), [{ version: 4, dirty: true }]);
  });

  gmFirst('golang-migrate forces 3 and, the file fixed, applies 4: both read the same clean history', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate:force', '3', '--yes'], p.env);
    await fs.writeFile(path.join(p.migrationsDir, '000004_delta.up.sql'), FOUR['000004_delta.up.sql']);
    await ok(['db:migrate'], p.env);
    assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
    assert.equal(await tables(p), TABLES);
    cleanHistory(await status(p), [1, 2, 3, 4], []);
    const r = await ours(p, { kind: 'up' });
    assert.equal([r.from, r.to, r.steps.length], [4, 4, 0]);
  });

  gmFirst.run();
}

// ---------------------------------------------------------------------------------------------
const oursFirst = engineSuite<Ctx>('our runner first, then golang-migrate, on one database');

if (oursFirst) {
  withStartedDockerProject(oursFirst, FOUR);

  oursFirst(
    "our runner applies 1 to 3 in golang-migrate's table; golang-migrate carries on with 4, and db:status calls every file applied",
    async (ctx) => {
      const p = ctx.p!;
      const r = await ours(p, { kind: 'up', n: 3 });
      assert.equal([r.from, r.to, r.steps.map((s) => s.version)], [null, 3, [1, 2, 3]]);
      assert.equal(await versionRows(p), [{ version: 3, dirty: false }]);
      const again = await ok(['db:migrate', '--yes', 'goto', '3'], p.env);
      assert.match(output(again), /\bno change\b/);
      await ok(['db:migrate'], p.env);
      assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
      assert.equal(await tables(p), TABLES);
      cleanHistory(await status(p), [1, 2, 3, 4], []);
    },
  );

  oursFirst('golang-migrate rolls back what our runner applied; our runner then golang-migrate apply it again', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate', '--yes', 'down', '2'], p.env);
    assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
    assert.equal(await tables(p), ['alpha', 'beta']);
    cleanHistory(await status(p), [1, 2], [3, 4]);
    const r = await ours(p, { kind: 'up', n: 1 });
    assert.equal([r.from, r.to], [2, 3]);
    await ok(['db:migrate'], p.env);
    assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
    assert.equal(await tables(p), TABLES);
    cleanHistory(await status(p), [1, 2, 3, 4], []);
  });

  oursFirst(
    'a golang-migrate up that fails after its own roll-back is diagnosed as that up, not as an interrupted roll-back',
    async (ctx) => {
      const p = ctx.p!;
      // Our history holds rows for 1 to 3; golang-migrate rolls back to 1 without knowing of it.
      await ok(['db:migrate', '--yes', 'down', '3'], p.env);
      assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
      await fs.writeFile(path.join(p.migrationsDir, '000002_beta.up.sql'), 'CREATE TABLE beta (id int PRIMARY KEY);\nSELECT 1/0;\n');
      const r = await cli(['db:migrate'], p.env);
      assert.is(r.code, 1, output(r));
      assert.equal(await versionRows(p), [{ version: 2, dirty: true }]);
      assert.equal(await tables(p), ['alpha']);
      // beta is not there: forcing 2 would record a migration that never ran.
      const e = await oursFails(p, { kind: 'up' });
      assert.match(e.message, /^Dirty database version 2\. Fix and force version\.$/m);
      assert.match(e.message, /000002_beta\.up\.sql stopped part-way; its objects look not applied/);
      assert.is(e.hint, 'nothing of it is there: pnpm db:migrate:force 1, then pnpm db:migrate');
      const s = await status(p);
      assert.equal([s.version, s.dirty], [2, true]);
      assert.match(s.fix ?? '', /pnpm db:migrate:force 1, then pnpm db:migrate/);
    },
  );

  oursFirst('forced back to 1 and fixed, golang-migrate and our runner finish the job together', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate:force', '1', '--yes'], p.env);
    await fs.writeFile(path.join(p.migrationsDir, '000002_beta.up.sql'), FOUR['000002_beta.up.sql']);
    await ok(['db:migrate', 'up', '1'], p.env);
    const r = await ours(p, { kind: 'up' });
    assert.equal([r.from, r.to, r.steps.map((s) => s.version)], [2, 4, [3, 4]]);
    assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
    assert.equal(await tables(p), TABLES);
    cleanHistory(await status(p), [1, 2, 3, 4], []);
  });

  oursFirst.run();
}

// ---------------------------------------------------------------------------------------------
// The gate: migration 3 waits on an advisory lock (key 4242) the test holds, so golang-migrate holds
// the migration lock for exactly as long as the test wants, with no sleep to guess at.
const GATE = 4242;
const GATED: Record<string, string> = {
  ...FOUR,
  '000003_gamma.up.sql': `SELECT pg_advisory_lock(${GATE});\nSELECT pg_advisory_unlock(${GATE});\n${FOUR['000003_gamma.up.sql']}`,
};

const locks = engineSuite<Ctx>('golang-migrate and our runner exclude each other through the advisory lock');

/** pids waiting for (granted = false) or holding (true) the advisory lock `key`. */
async function lockPids(p: DockerProject, key: number, granted: boolean): Promise<number[]> {
  const rows = await query<{ pid: number }>(
    p,
    `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = $1::bigint::oid AND objsubid = 1 AND granted = $2`,
    [key, granted],
  );
  return rows.map((r) => r.pid);
}

/** The result of `done`, or a failure after `ms` (a bound on a hang). */
async function within<T>(what: string, ms: number, done: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`gave up waiting for ${what}`)), ms)));
  try {
    return await Promise.race([done, limit]);
  } finally {
    clearTimeout(timer);
  }
}

if (locks) {
  setUp(locks, async (ctx) => {
    ctx.p = await makeDockerProject({ migrations: GATED });
    await startDockerProject(ctx.p);
    await ok(['db:migrate', 'up', '1'], ctx.p.env);
    ctx.holder = await connect({ ...(await appTarget(ctx.p, '127.0.0.1', 'migrate')), applicationName: 'lock holder (test)' });
  });
  locks.after(async (ctx) => {
    await ctx.holder?.end().catch(() => {});
    await removeDockerProject(ctx.p);
  });

  const key = async (ctx: Ctx) => advisoryLockKey('/' + (await ctx.holder!.query('SELECT current_database() AS db')).rows[0].db);

  locks('the key is golang-migrate\'s for this database: 1726534663 for "app"', async (ctx) => {
    const { db } = (await ctx.holder!.query('SELECT current_database() AS db')).rows[0];
    assert.is(db, 'app');
    assert.is(await key(ctx), GOLANG_MIGRATE_KEY_FOR_APP);
  });

  locks('golang-migrate waits, with no timeout, while a session of ours holds the key, and goes ahead once it is released', async (ctx) => {
    const p = ctx.p!;
    const k = await key(ctx);
    const holderPid = (await ctx.holder!.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await ctx.holder!.query('SELECT pg_advisory_lock($1)', [k]);
    let released = false;
    const run = spawnCli(['db:migrate', 'up', '1'], p.env);
    let finished = false;
    void run.done.then(() => (finished = true));
    try {
      await until('golang-migrate to wait for the migration lock', 120_000, async () => (await lockPids(p, k, false)).length > 0);
      assert.equal(await lockPids(p, k, true), [holderPid]);
      assert.is(finished, false, 'db:migrate finished while the lock was held');
      assert.is(run.child.exitCode, null);
      assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
      assert.not.ok(await tableExists(p, 'beta'));
      await ctx.holder!.query('SELECT pg_advisory_unlock($1)', [k]);
      released = true;
      const r = await within('db:migrate to finish once the lock was released', 120_000, run.done);
      assert.is(r.code, 0, output(r));
      assert.match(r.stderr, /2\/u beta/);
      assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
      assert.ok(await tableExists(p, 'beta'));
    } finally {
      if (!released) await ctx.holder!.query('SELECT pg_advisory_unlock_all()').catch(() => {});
      if (run.child.exitCode === null) run.child.kill('SIGKILL');
      await run.done;
    }
  });

  locks('our runner gives up after its lock timeout, naming the session that holds the key, and applies nothing', async (ctx) => {
    const p = ctx.p!;
    const k = await key(ctx);
    const holderPid = (await ctx.holder!.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await ctx.holder!.query('SELECT pg_advisory_lock($1)', [k]);
    try {
      const e = await oursFails(p, { kind: 'up' }, { lockTimeoutMs: 2000 });
      assert.match(
        e.message,
        new RegExp(
          `^another migration has held the migration lock \\(key ${k}\\) for more than 2s: pid ${holderPid}, application "lock holder \\(test\\)"`,
        ),
      );
      assert.match(e.hint, /DB_MIGRATE_LOCK_TIMEOUT/);
      assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
      assert.not.ok(await tableExists(p, 'gamma'));
    } finally {
      await ctx.holder!.query('SELECT pg_advisory_unlock($1)', [k]);
    }
  });

  locks(
    "while golang-migrate holds the lock in a slow migration, our runner fails after its timeout naming golang-migrate's session, and a patient one waits and carries on after it",
    async (ctx) => {
      const p = ctx.p!;
      const k = await key(ctx);
      await ctx.holder!.query('SELECT pg_advisory_lock($1)', [GATE]);
      let gateOpen = false;
      const run = spawnCli(['db:migrate', 'up', '1'], p.env);
      try {
        await until('golang-migrate to reach the gate in 000003', 120_000, async () => (await lockPids(p, GATE, false)).length > 0);
        const [gmPid] = await lockPids(p, GATE, false);
        // The session stuck in the migration is the one holding the migration lock.
        assert.equal(await lockPids(p, k, true), [gmPid]);
        // golang-migrate marked (3, dirty) before running the file, as its protocol says.
        assert.equal(await versionRows(p), [{ version: 3, dirty: true }]);

        const e = await oursFails(p, { kind: 'up' }, { lockTimeoutMs: 2000 });
        assert.match(
          e.message,
          new RegExp(
            `^another migration has held the migration lock \\(key ${k}\\) for more than 2s: pid ${gmPid}, application "", user app_owner from \\d+\\.\\d+\\.\\d+\\.\\d+`,
          ),
        );
        assert.not.match(e.message, /Dirty database/);

        let settled = false;
        const patient = ours(p, { kind: 'up' }, { lockTimeoutMs: 120_000, applicationName: 'patient runner (test)' });
        void patient.then(
          () => (settled = true),
          () => (settled = true),
        );
        await until(
          'the patient runner to connect',
          60_000,
          async () => (await query(p, `SELECT 1 FROM pg_stat_activity WHERE application_name = 'patient runner (test)'`)).length > 0,
        );
        assert.is(settled, false, 'our runner finished while golang-migrate held the lock');
        assert.equal(await lockPids(p, k, true), [gmPid]);

        await ctx.holder!.query('SELECT pg_advisory_unlock($1)', [GATE]);
        gateOpen = true;
        const r = await within('golang-migrate to finish 000003', 120_000, run.done);
        assert.is(r.code, 0, output(r));
        const done = await within('the patient runner to finish', 120_000, patient);
        // It took the lock after golang-migrate let go, re-read (3, clean) under it, and applied 4.
        assert.equal([done.from, done.to, done.steps.map((s) => s.version)], [3, 4, [4]]);
        assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
        assert.equal(await tables(p), TABLES);
      } finally {
        if (!gateOpen) await ctx.holder!.query('SELECT pg_advisory_unlock_all()').catch(() => {});
        if (run.child.exitCode === null) run.child.kill('SIGKILL');
        await run.done;
      }
    },
  );

  locks.run();
}

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { advisoryLockKey } from '@dbkit/core/migrations/lock';
import { cli, withStartedProject, type Project } from './setup/project.ts';
import { output, query, spawnCli, until, versionRows } from './setup/engine.ts';

const files: Record<string, string> = {
  '000001_slow.up.sql': `CREATE TABLE slow (id int);
INSERT INTO slow SELECT generate_series(1, 5000);
-- Declared IMMUTABLE so an index may use it; it sleeps, so indexing the table takes minutes.
CREATE FUNCTION slow_key(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN $1; END $$;
`,
  '000001_slow.down.sql': 'DROP TABLE slow;\nDROP FUNCTION slow_key(int);\n',
  '000002_slow_index.up.sql': 'CREATE INDEX CONCURRENTLY slow_idx ON slow (slow_key(id));\n',
  '000002_slow_index.down.sql': 'DROP INDEX CONCURRENTLY slow_idx;\n',
};

interface Ctx {
  p?: Project;
}

const dirty = suite<Ctx>('a runner killed in the middle of a non-transactional migration', {});

withStartedProject(dirty, { migrations: files, migrate: ['up', '1'] });

dirty(
  'frees the lock; the next run reports the dirty version, what the file left and the exact force command, and exits 1',
  async (ctx) => {
    const p = ctx.p!;
    const { child, done } = spawnCli(['db:migrate'], p.env);
    try {
      await until(
        'the index build to start',
        60_000,
        async () =>
          (
            await query(
              p,
              `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'pg-deploy migrate%' AND state = 'active' AND query LIKE 'CREATE INDEX CONCURRENTLY%'`,
            )
          ).length > 0,
      );
    } finally {
      child.kill('SIGKILL');
    }
    assert.is((await done).code, 128);
    // Default lock timeout (15 s): a lock still held by the dead runner's backend fails this run
    // with the lock message instead of the dirty one.
    const r = await cli(['db:migrate'], p.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /^error: Dirty database version 2\. Fix and force version\.$/m);
    assert.match(r.stderr, /000002_slow_index\.up\.sql stopped part-way; .*INVALID .*slow_idx/);
    assert.match(
      r.stderr,
      /hint: drop the invalid index \(DROP INDEX CONCURRENTLY slow_idx\), then pnpm db:migrate:force 1, then pnpm db:migrate/,
    );
    const [{ db }] = await query<{ db: string }>(p, 'SELECT current_database() AS db');
    assert.equal(
      await query(p, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::oid`, [advisoryLockKey('/' + db)]),
      [],
    );
    assert.equal(await versionRows(p), [{ version: 2, dirty: true }]);
  },
);

dirty('db:status says dirty and --exit-code fails', async (ctx) => {
  const r = await cli(['db:status', '--json', '--exit-code'], ctx.p!.env);
  assert.is(r.code, 1, output(r));
  const s = JSON.parse(r.stdout);
  assert.is(s.version, 2);
  assert.is(s.dirty, true);
});

dirty('db:migrate:force without a terminal and without --yes refuses, and changes nothing', async (ctx) => {
  const r = await cli(['db:migrate:force', '1'], ctx.p!.env);
  assert.is.not(r.code, 0, output(r));
  assert.match(r.stderr, /--yes/);
  assert.equal(await versionRows(ctx.p!), [{ version: 2, dirty: true }]);
});

dirty('db:migrate:force 1 --yes records version 1, clean, in the one row', async (ctx) => {
  const p = ctx.p!;
  await query(p, 'DROP INDEX CONCURRENTLY slow_idx'); // what the hint says to do first
  const r = await cli(['db:migrate:force', '1', '--yes'], p.env);
  assert.is(r.code, 0, output(r));
  assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
  const s = JSON.parse((await cli(['db:status', '--json'], p.env)).stdout);
  assert.equal([s.version, s.dirty, s.pending.map((e: { version: number }) => e.version)], [1, false, [2]]);
});

dirty('a CONCURRENTLY file that fails is left dirty, as golang-migrate leaves it, and the error says so', async (ctx) => {
  const p = ctx.p!;
  await fs.writeFile(
    path.join(p.migrationsDir, '000002_slow_index.up.sql'),
    'CREATE INDEX CONCURRENTLY slow_idx ON slow (no_such_column);\n',
  );
  const r = await cli(['db:migrate'], p.env);
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /error: 000002_slow_index\.up\.sql:1: column "no_such_column" does not exist/);
  assert.match(r.stderr, /runs outside a transaction, so the database is left dirty at version 2/);
  assert.match(r.stderr, /Dirty database version 2\. Fix and force version\./);
  assert.match(r.stderr, /hint: nothing of it is there: pnpm db:migrate:force 1, then pnpm db:migrate/);
  assert.equal(await versionRows(p), [{ version: 2, dirty: true }]);
});

dirty("reads golang-migrate's (-1, dirty) row as an interrupted roll-back of the first migration", async (ctx) => {
  const p = ctx.p!;
  // What golang-migrate writes when `down` of the first migration fails.
  await query(p, 'BEGIN; DELETE FROM schema_migrations; INSERT INTO schema_migrations VALUES (-1, true); COMMIT');
  const r = await cli(['db:migrate'], p.env);
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /^error: Dirty database version -1\. Fix and force version\.$/m);
  assert.match(
    r.stderr,
    /000001_slow\.down\.sql \(rolling back to none\) stopped part-way; the objects its up file creates look still present/,
  );
  assert.match(r.stderr, /hint: if the roll-back did nothing: pnpm db:migrate:force 1$/m);
  const forced = await cli(['db:migrate:force', '--yes', '--', '-1'], p.env);
  assert.is(forced.code, 0, output(forced));
  assert.equal(await versionRows(p), []);
});

dirty.run();

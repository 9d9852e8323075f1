import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Migration } from '@dbkit/core/migrations/files';
import { forceTarget, plan, type PlannedStep } from '@dbkit/core/migrations/plan';

interface Ctx {
  migrations: Migration[];
}

const file = (name: string) => ({ file: name, dir: 'migrations', sql: 'SELECT 1;\n', checksum: 'x' });
const migration = (version: number): Migration => ({
  version,
  name: `m${version}`,
  up: file(`${version}_m${version}.up.sql`),
  down: file(`${version}_m${version}.down.sql`),
});
/** Each step as "up 2 -> 2" / "down 3 -> 2", the version it moves to last. */
const shown = (steps: PlannedStep[]) => steps.map((s) => `${s.dir} ${s.m.version} -> ${s.after ?? 'none'}`);

const planning = suite<Ctx>('plan: the steps of a command, from a list of files and the current version', {
  migrations: [1, 2, 3, 5].map(migration),
});

planning('up from nothing applies every file in order', ({ migrations }) => {
  assert.equal(shown(plan(migrations, null, { kind: 'up' })), ['up 1 -> 1', 'up 2 -> 2', 'up 3 -> 3', 'up 5 -> 5']);
});

planning('up N applies the next N pending files only', ({ migrations }) => {
  assert.equal(shown(plan(migrations, 1, { kind: 'up', n: 2 })), ['up 2 -> 2', 'up 3 -> 3']);
});

planning('up at the last version has nothing to do', ({ migrations }) => {
  assert.equal(plan(migrations, 5, { kind: 'up' }), []);
});

planning('up from a version with no file applies the files above it', ({ migrations }) => {
  assert.equal(shown(plan(migrations, 4, { kind: 'up' })), ['up 5 -> 5']);
});

planning('down N rolls back from the current version, each step landing on the one before', ({ migrations }) => {
  assert.equal(shown(plan(migrations, 5, { kind: 'down', n: 2 })), ['down 5 -> 3', 'down 3 -> 2']);
});

planning('down all rolls back to none, and down from nothing does nothing', ({ migrations }) => {
  assert.equal(shown(plan(migrations, 3, { kind: 'down', n: 'all' })), ['down 3 -> 2', 'down 2 -> 1', 'down 1 -> none']);
  assert.equal(plan(migrations, null, { kind: 'down', n: 'all' }), []);
});

planning('goto a higher version applies up to it, a lower one rolls back to it, the same one does nothing', ({ migrations }) => {
  assert.equal(shown(plan(migrations, 1, { kind: 'goto', version: 3 })), ['up 2 -> 2', 'up 3 -> 3']);
  assert.equal(shown(plan(migrations, 5, { kind: 'goto', version: 2 })), ['down 5 -> 3', 'down 3 -> 2']);
  assert.equal(plan(migrations, 3, { kind: 'goto', version: 3 }), []);
});

planning('goto a version with no file refuses, naming it', ({ migrations }) => {
  assert.throws(() => plan(migrations, 1, { kind: 'goto', version: 4 }), /no migration has version 4/);
});

planning('down or goto from a version with no file refuses, with the force command as the way out', ({ migrations }) => {
  for (const cmd of [
    { kind: 'down', n: 1 },
    { kind: 'goto', version: 1 },
  ] as const) {
    try {
      plan(migrations, 4, cmd);
      assert.unreachable('should refuse');
    } catch (e) {
      assert.match((e as Error).message, 'the database is at version 4, which has no migration file');
      assert.match((e as { hint?: string }).hint ?? '', 'pnpm db:migrate:force 5');
    }
  }
});

planning('force writes a version that has a file, or none for -1', ({ migrations }) => {
  assert.is(forceTarget(migrations, 3), 3);
  assert.is(forceTarget(migrations, -1), null);
});

planning('force refuses a version with no file', ({ migrations }) => {
  assert.throws(() => forceTarget(migrations, 4), /no migration has version 4/);
});

planning('uses the file of the direction it runs: up files up, down files down', ({ migrations }) => {
  const [up] = plan(migrations, null, { kind: 'up', n: 1 });
  const [down] = plan(migrations, 1, { kind: 'down', n: 1 });
  assert.is(up.m.up.file, '1_m1.up.sql');
  assert.is(down.dir, 'down');
  assert.is(down.m.version, 1);
});

planning.run();

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cli, withStartedProject, type CliResult, type Project } from './setup/project.ts';
import { output, query, versionRows } from './setup/engine.ts';

// Each transactional file logs its run in run_log, so a file applied twice shows up as a count;
// the CONCURRENTLY files cannot log (they must be alone) but fail if run twice. The pauses before
// them make sure the other runners are already waiting for the lock when they run: a waiter that
// holds a snapshot makes CREATE/DROP INDEX CONCURRENTLY wait for it, which is a deadlock.
const files: Record<string, string> = {
  '000001_t1.up.sql':
    "CREATE TABLE IF NOT EXISTS run_log (version int, dir text);\nCREATE TABLE t1 (id int);\nINSERT INTO run_log VALUES (1, 'up');\n",
  '000001_t1.down.sql': "DROP TABLE t1;\nINSERT INTO run_log VALUES (1, 'down');\n",
  '000004_t4.up.sql': "CREATE TABLE t4 (id int);\nINSERT INTO run_log VALUES (4, 'up');\nSELECT pg_sleep(2);\n",
  '000004_t4.down.sql': "DROP TABLE t4;\nINSERT INTO run_log VALUES (4, 'down');\n",
  '000005_t2_index.up.sql': 'CREATE INDEX CONCURRENTLY t2_id ON t2 (id);\n',
  '000005_t2_index.down.sql': 'DROP INDEX CONCURRENTLY t2_id;\n',
  '000006_pause.up.sql': "INSERT INTO run_log VALUES (6, 'up');\n",
  '000006_pause.down.sql': "INSERT INTO run_log VALUES (6, 'down');\nSELECT pg_sleep(2);\n",
};
for (const v of [2, 3]) {
  files[`00000${v}_t${v}.up.sql`] = `CREATE TABLE t${v} (id int);\nINSERT INTO run_log VALUES (${v}, 'up');\n`;
  files[`00000${v}_t${v}.down.sql`] = `DROP TABLE t${v};\nINSERT INTO run_log VALUES (${v}, 'down');\n`;
}

const RUNNERS = 5;
const ROUNDS = 3;

interface Ctx {
  p?: Project;
}

const race = suite<Ctx>(`${RUNNERS} db:migrate processes at once, ${ROUNDS} rounds`, {});

withStartedProject(race, { migrations: files });

const all = (p: Project, args: string[]) => Promise.all(Array.from({ length: RUNNERS }, () => cli(args, p.env)));

async function runs(p: Project, dir: 'up' | 'down'): Promise<number[]> {
  const rows = await query<{ version: number; n: number }>(
    p,
    'SELECT version, count(*)::int AS n FROM run_log WHERE dir = $1 GROUP BY 1 ORDER BY 1',
    [dir],
  );
  return rows.map((r) => r.n);
}

function oneDidItAllOthersNoChange(rs: CliResult[], did: RegExp) {
  for (const r of rs) assert.is(r.code, 0, output(r));
  const outs = rs.map((r) => r.stdout.trim());
  assert.is(outs.filter((o) => did.test(o)).length, 1, outs.join('\n'));
  assert.is(outs.filter((o) => o === 'no change').length, RUNNERS - 1, outs.join('\n'));
}

race(
  'every round applies each migration exactly once and rolls it back exactly once; no runner fails, the others find no change',
  async (ctx) => {
    const p = ctx.p!;
    for (let round = 1; round <= ROUNDS; round++) {
      oneDidItAllOthersNoChange(await all(p, ['db:migrate']), /^applied 6 migrations /);
      assert.equal(await versionRows(p), [{ version: 6, dirty: false }]);
      assert.equal(await runs(p, 'up'), [round, round, round, round, round], `round ${round}`);
      oneDidItAllOthersNoChange(await all(p, ['db:migrate', '--yes', 'down', '--all']), /^rolled back 6 migrations /);
      assert.equal(await versionRows(p), []);
      assert.equal(await runs(p, 'down'), [round, round, round, round, round], `round ${round}`);
    }
  },
);

race.run();

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cli, withStartedProject, type Project } from './setup/project.ts';
import { output, query, tableExists, versionRows } from './setup/engine.ts';

// db:migrate --single-transaction: the whole run, files and bookkeeping, in one transaction.
const files: Record<string, string> = {
  '000001_a.up.sql': 'CREATE TABLE a (id int);\n',
  '000001_a.down.sql': 'DROP TABLE a;\n',
  '000002_b.up.sql': 'CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\n',
  '000002_b.down.sql': 'DROP TABLE b;\n',
  '000003_c.up.sql': 'CREATE TABLE c (id int);\n',
  '000003_c.down.sql': 'DROP TABLE c;\n',
};

interface Ctx {
  p?: Project;
}

const one = suite<Ctx>('db:migrate --single-transaction', {});

withStartedProject(one, { migrations: files });

const history = async (p: Project) =>
  (await query(p, 'SELECT version FROM schema_migrations_history ORDER BY 1')).map((r) => Number(r.version));

one('applies every pending file and its bookkeeping, and rolls them all back, in one transaction each way', async (ctx) => {
  const p = ctx.p!;
  const up = await cli(['db:migrate', '--single-transaction'], p.env);
  assert.is(up.code, 0, output(up));
  assert.match(up.stdout, /applied 3 migrations in .* \(version none -> 3\)/);
  for (const t of ['a', 'b', 'c']) assert.ok(await tableExists(p, t), t);
  assert.equal(await versionRows(p), [{ version: 3, dirty: false }]);
  assert.equal(await history(p), [1, 2, 3]);
  const down = await cli(['db:migrate', '--yes', 'down', '--all', '--single-transaction'], p.env);
  assert.is(down.code, 0, output(down));
  for (const t of ['a', 'b', 'c']) assert.not.ok(await tableExists(p, t), t);
  assert.equal(await versionRows(p), []);
  assert.equal(await history(p), []);
});

one('a failure in the last file leaves everything as it was before the run: no table, same version, not dirty', async (ctx) => {
  const p = ctx.p!;
  await cli(['db:migrate', 'up', '1'], p.env);
  const bad = path.join(p.migrationsDir, '000003_c.up.sql');
  await fs.writeFile(bad, 'CREATE TABLE c (id int);\nINSERT INTO c VALUES (1 / 0);\n');
  try {
    const r = await cli(['db:migrate', '--single-transaction'], p.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /error: 000003_c\.up\.sql: division by zero/);
    assert.match(r.stderr, /hint: nothing of this run was applied \(one transaction, rolled back\); the version is still 1, not dirty/);
    assert.ok(await tableExists(p, 'a'));
    for (const t of ['b', 'c']) assert.not.ok(await tableExists(p, t), `${t} was kept`);
    assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
    assert.equal(await history(p), [1]);
  } finally {
    await fs.writeFile(bad, files['000003_c.up.sql']);
    await cli(['db:migrate', '--yes', 'down', '--all'], p.env);
  }
});

one('a file that cannot run in a transaction refuses the mode before anything runs', async (ctx) => {
  const p = ctx.p!;
  const f = path.join(p.migrationsDir, '000003_c.up.sql');
  await fs.writeFile(f, 'CREATE INDEX CONCURRENTLY c_idx ON b (id);\n');
  try {
    const r = await cli(['db:migrate', '--single-transaction'], p.env);
    assert.is(r.code, 1, output(r));
    assert.match(
      r.stderr,
      /^error: --single-transaction: 000003_c\.up\.sql cannot run inside a transaction block .*; nothing was applied$/m,
    );
    assert.match(r.stderr, /hint: run without --single-transaction/);
    for (const t of ['a', 'b']) assert.not.ok(await tableExists(p, t), `${t} was applied`);
    assert.equal(await versionRows(p), []);
  } finally {
    await fs.writeFile(f, files['000003_c.up.sql']);
  }
});

one.run();

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cli, withStartedProject, type Project } from './setup/project.ts';
import { output, query, tableExists, versionRows } from './setup/engine.ts';

const files: Record<string, string> = {
  '000001_accounts.up.sql': 'CREATE TABLE accounts (id int PRIMARY KEY, email text UNIQUE);\n',
  '000001_accounts.down.sql': 'DROP TABLE accounts;\n',
  // The second statement fails at run time: PostgreSQL reports no position for a duplicate key.
  '000002_import.up.sql':
    "-- two accounts, one address\nCREATE TABLE imports (id int);\nINSERT INTO accounts VALUES (1, 'a@example.com'), (2, 'a@example.com');\n",
  '000002_import.down.sql': 'DROP TABLE imports;\n',
};

interface Ctx {
  p?: Project;
}

const fail = suite<Ctx>('db:migrate with a file that fails, and with invalid files', {});

withStartedProject(fail, { migrations: files, migrate: ['up', '1'] });

async function assertUntouched(p: Project) {
  assert.not.ok(await tableExists(p, 'imports'), 'the first statement of the failed file was kept');
  assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
  assert.equal(
    (await query(p, 'SELECT version FROM schema_migrations_history ORDER BY 1')).map((r) => Number(r.version)),
    [1],
  );
}

fail(
  'a file failing on its second statement exits 1, names the file and line, and leaves schema and version as they were, not dirty',
  async (ctx) => {
    const r = await cli(['db:migrate'], ctx.p!.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /error: 000002_import\.up\.sql:3: duplicate key value violates unique constraint/);
    assert.match(r.stderr, /hint: nothing of 000002_import\.up\.sql was applied/);
    await assertUntouched(ctx.p!);
  },
);

fail('names the line PostgreSQL points at when the error has a position', async (ctx) => {
  await fs.writeFile(
    path.join(ctx.p!.migrationsDir, '000002_import.up.sql'),
    'CREATE TABLE imports (id int);\n\n  INSERT INTO no_such_table VALUES (1);\n',
  );
  const r = await cli(['db:migrate'], ctx.p!.env);
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /error: 000002_import\.up\.sql:3: relation "no_such_table" does not exist/);
  await assertUntouched(ctx.p!);
});

fail('refuses invalid files before connecting: one line per file, exit 1, nothing applied', async (ctx) => {
  const dir = path.join(ctx.p!.dir, 'bad-migrations');
  await fs.mkdir(dir);
  const bad: Record<string, string> = {
    ...files,
    '000002_import.up.sql': 'CREATE TABLE imports (id int);\n', // valid, and pending: must not run
    '000003_dup.up.sql': 'SELECT 1;',
    '000003_dup.down.sql': 'SELECT 1;',
    '000003_other.up.sql': 'SELECT 1;',
    '000003_other.down.sql': 'SELECT 1;',
    '000004_lonely.up.sql': 'CREATE TABLE lonely (id int);',
    '000005-typo.up.sql': 'SELECT 1;',
    '000006_blank.up.sql': '\n-- to do\n',
    '000006_blank.down.sql': 'SELECT 1;',
  };
  for (const [n, sql] of Object.entries(bad)) await fs.writeFile(path.join(dir, n), sql);
  const r = await cli(['db:migrate'], { ...ctx.p!.env, DB_MIGRATIONS_DIR: dir });
  assert.is(r.code, 1, output(r));
  const lines = r.stderr.split('\n');
  for (const [file, why] of [
    ['000003_other.down.sql', /used twice/],
    ['000003_other.up.sql', /used twice/],
    ['000004_lonely.up.sql', /no matching \.down\./],
    ['000005-typo.up.sql', /not a migration name/],
    ['000006_blank.up.sql', /empty/],
  ] as const) {
    assert.is(lines.filter((l) => l.trim().startsWith(`${file}: `) && why.test(l)).length, 1, `${file}\n${r.stderr}`);
  }
  assert.match(r.stderr, /nothing was applied/);
  await assertUntouched(ctx.p!);
});

fail('checks the text of every file it will run before running any, and only those; db:status checks them all', async (ctx) => {
  const down = path.join(ctx.p!.migrationsDir, '000001_accounts.down.sql');
  const before = await fs.readFile(down, 'utf8');
  await fs.writeFile(down, '-- to do\n');
  try {
    const r = await cli(['db:migrate', '--yes', 'down', '1'], ctx.p!.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /nothing was applied:\n\s+000001_accounts\.down\.sql: the file is empty/);
    assert.ok(await tableExists(ctx.p!, 'accounts'), 'rolled back despite the refusal');
    await assertUntouched(ctx.p!);
    // Nothing to run: the bad file is not read, as golang-migrate would not read it.
    const same = await cli(['db:migrate', '--yes', 'goto', '1'], ctx.p!.env);
    assert.is(same.code, 0, output(same));
    assert.match(same.stdout, /^no change$/m);
    const st = await cli(['db:status'], ctx.p!.env);
    assert.is(st.code, 1, output(st));
    assert.match(st.stderr, /000001_accounts\.down\.sql: the file is empty/);
  } finally {
    await fs.writeFile(down, before);
  }
});

fail.run();

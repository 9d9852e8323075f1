import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '@dbkit/core/errors';
import { loadMigrations, nextVersion, parseName } from '@dbkit/core/migrations/files';
import { lineOf, needsOwnTransaction, splitStatements } from '@dbkit/core/migrations/statements';

// golang-migrate's source/parse_test.go (v4.18.3), case for case.
const names = suite("parseName (golang-migrate's file-name regex)");

names('reads the names golang-migrate reads, with the same version, identifier and direction', () => {
  assert.equal(parseName('1_foobar.up.sql'), { version: 1, name: 'foobar', direction: 'up', ext: 'sql' });
  assert.equal(parseName('1_foobar.down.sql'), { version: 1, name: 'foobar', direction: 'down', ext: 'sql' });
  assert.equal(parseName('1_f-o_ob+ar.up.sql'), { version: 1, name: 'f-o_ob+ar', direction: 'up', ext: 'sql' });
  assert.equal(parseName('1485385885_foobar.up.sql'), { version: 1485385885, name: 'foobar', direction: 'up', ext: 'sql' });
  assert.equal(parseName('20170412214116_date_foobar.up.sql'), {
    version: 20170412214116,
    name: 'date_foobar',
    direction: 'up',
    ext: 'sql',
  });
  assert.equal(parseName('000042_add.users.up.sql'), { version: 42, name: 'add.users', direction: 'up', ext: 'sql' });
});

names('refuses the names golang-migrate refuses', () => {
  for (const n of ['-1_foobar.up.sql', 'foobar.up.sql', '1.up.sql', '1_foobar.sql', '1_foobar.up', '1_foobar.down']) {
    assert.is(parseName(n), undefined, n);
  }
});

names.run();

interface DirCtx {
  dir: string;
}

const load = suite<DirCtx>('loadMigrations (validation before anything runs)', { dir: '' });

load.before.each(async (ctx) => {
  ctx.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'migfiles-'));
});

load.after.each(async (ctx) => {
  await fs.rm(ctx.dir, { recursive: true, force: true });
});

async function write(dir: string, files: Record<string, string>) {
  for (const [n, sql] of Object.entries(files)) await fs.writeFile(path.join(dir, n), sql);
}

async function problems(dir: string): Promise<string[]> {
  try {
    loadMigrations(dir);
  } catch (e) {
    assert.instance(e, UserError);
    return (e as Error).message
      .split('\n')
      .slice(1)
      .map((l) => l.trim());
  }
  throw new Error('loadMigrations accepted an invalid folder');
}

load('pairs up and down files in version order, skipping dotfiles, READMEs and directories', async (ctx) => {
  await write(ctx.dir, {
    '000002_b.up.sql': 'SELECT 2;',
    '000002_b.down.sql': 'SELECT -2;',
    '000001_a.up.sql': 'SELECT 1;',
    '000001_a.down.sql': 'SELECT -1;',
    '.keep': '',
    'README.md': '# notes',
  });
  await fs.mkdir(path.join(ctx.dir, 'archive'));
  const ms = loadMigrations(ctx.dir);
  assert.equal(
    ms.map((m) => [m.version, m.name, m.up.file, m.down.file]),
    [
      [1, 'a', '000001_a.up.sql', '000001_a.down.sql'],
      [2, 'b', '000002_b.up.sql', '000002_b.down.sql'],
    ],
  );
  assert.match(ms[0].up.checksum, /^[0-9a-f]{64}$/);
});

load('names every bad file on a line of its own, and refuses the whole folder', async (ctx) => {
  await write(ctx.dir, {
    '000001_a.up.sql': 'SELECT 1;',
    '000001_a.down.sql': 'SELECT -1;',
    '000001_b.up.sql': 'SELECT 1;', // duplicate version
    '000002_c.up.sql': 'SELECT 2;', // no down
    '000003_d.down.sql': 'SELECT 3;', // no up
    'create_users.sql': 'SELECT 4;', // not a migration name
    '000005_e.up.sql': '-- nothing yet\n/* still nothing */\n',
    '000005_e.down.sql': 'SELECT 5;', // empty
  });
  const lines = await problems(ctx.dir);
  assert.is(lines.length, 5, lines.join('\n'));
  const about = (file: string, what: RegExp) =>
    assert.ok(
      lines.some((l) => l.startsWith(`${file}: `) && what.test(l)),
      `${file} ${what}: ${lines.join('\n')}`,
    );
  about('000001_b.up.sql', /version 1 is used twice/);
  about('000002_c.up.sql', /no matching \.down\./);
  about('000003_d.down.sql', /no matching \.up\./);
  about('create_users.sql', /not a migration name/);
  about('000005_e.up.sql', /empty/);
});

load('sees one version written two ways (1_ and 000001_) as a duplicate', async (ctx) => {
  await write(ctx.dir, {
    '1_a.up.sql': 'SELECT 1;',
    '1_a.down.sql': 'SELECT 1;',
    '000001_a.up.sql': 'SELECT 1;',
    '000001_a.down.sql': 'SELECT 1;',
  });
  const lines = await problems(ctx.dir);
  assert.is(lines.length, 2, lines.join('\n'));
  assert.ok(lines.every((l) => /used twice/.test(l)));
});

load('refuses CREATE INDEX CONCURRENTLY that shares its file, which PostgreSQL would refuse mid-run', async (ctx) => {
  await write(ctx.dir, {
    '000001_a.up.sql': 'CREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n',
    '000001_a.down.sql': 'DROP TABLE t;',
  });
  const lines = await problems(ctx.dir);
  assert.is(lines.length, 1);
  assert.match(lines[0], /^000001_a\.up\.sql: CREATE INDEX CONCURRENTLY must be the only statement/);
});

load('accepts CREATE INDEX CONCURRENTLY alone in its file, comments around it', async (ctx) => {
  await write(ctx.dir, {
    '000001_a.up.sql': '-- large table: do not block writes\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n',
    '000001_a.down.sql': 'DROP INDEX CONCURRENTLY t_id;',
  });
  assert.is(loadMigrations(ctx.dir).length, 1);
});

load('says the folder is missing rather than listing nothing', async (ctx) => {
  try {
    loadMigrations(path.join(ctx.dir, 'nope'));
    assert.unreachable('accepted a missing folder');
  } catch (e) {
    assert.match((e as Error).message, /does not exist/);
  }
});

load.run();

const own = suite('needsOwnTransaction');

own('sends CONCURRENTLY, VACUUM and files with their own BEGIN/COMMIT outside our transaction', () => {
  assert.ok(needsOwnTransaction('CREATE INDEX CONCURRENTLY i ON t (x);'));
  assert.ok(needsOwnTransaction('vacuum analyze t;'));
  assert.ok(needsOwnTransaction('BEGIN;\nUPDATE t SET x = 1;\nCOMMIT;'));
  assert.ok(needsOwnTransaction('update t set x = 1;\ncommit;'));
});

own('keeps PL/pgSQL bodies, comments and strings from looking like transaction control', () => {
  const fn = `CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END;
$$;`;
  assert.not.ok(needsOwnTransaction(fn));
  assert.not.ok(needsOwnTransaction(`CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END; $body$;`));
  assert.not.ok(needsOwnTransaction(`-- run CONCURRENTLY later\nCOMMENT ON TABLE t IS 'COMMIT; VACUUM';`));
  assert.not.ok(needsOwnTransaction(`CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;`));
});

own.run();

const split = suite('splitStatements');

split('splits at semicolons outside strings, quoted names, comments and dollar quotes', () => {
  const sql = `-- head
CREATE TABLE "a;b" (x text DEFAULT 'x;y');
/* a; /* nested; */ comment */
CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $f$ BEGIN RETURN 1; END; $f$;
SELECT E'it\\'s; fine', $$;$$`;
  const st = splitStatements(sql)!;
  assert.equal(
    st.map((s) => s.text.trim().split('\n').pop()!.slice(0, 12)),
    ['CREATE TABLE', 'CREATE FUNCT', "SELECT E'it\\"],
  );
  assert.is(sql.slice(st[0].start, st[0].start + 6), 'CREATE');
  assert.is(sql.slice(st[2].start, st[2].start + 6), 'SELECT');
  assert.is(st.map((s) => s.text).join(''), sql.slice(st[0].offset));
});

split('declines SQL-standard function bodies, whose semicolons it cannot place', () => {
  assert.is(splitStatements('CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;'), undefined);
});

split.run();

const lines = suite('lineOf');

lines("turns PostgreSQL's character position into a 1-based line, counting characters outside the BMP as one", () => {
  const sql = "SELECT '😀';\nSELECT 'é';\nSELECT nope;";
  // PostgreSQL counts characters: the 'n' of nope is character 32.
  assert.is(lineOf(sql, 32), 3);
  assert.is(lineOf(sql, 1), 1);
  assert.is(lineOf(sql, 12), 1);
  assert.is(lineOf(sql, 13), 2);
});

lines.run();

const next = suite('nextVersion');

next('takes the number after the highest, six digits, as migrate create -seq does', () => {
  assert.is(nextVersion([], new Date(), false), '000001');
  assert.is(nextVersion([1, 9, 3], new Date(), false), '000010');
  assert.is(nextVersion([999999], new Date(), false), '1000000');
});

next('uses the UTC time, YYYYMMDDHHMMSS, with --timestamp', () => {
  assert.is(nextVersion([1], new Date('2024-02-29T23:59:58.900Z'), true), '20240229235958');
});

next.run();

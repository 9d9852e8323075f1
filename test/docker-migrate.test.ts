import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  cli,
  ok,
  compose,
  engineSuite,
  withStartedDockerProject,
  makeDockerProject,
  removeDockerProject,
  type DockerProject,
} from './setup/docker.ts';
import { setUp } from './setup/hooks.ts';
import { existingTables, output, query, tableExists, versionRows } from './setup/engine.ts';
import { withClient } from '@dbkit/core/pg';
import { appTarget, type CliResult } from './setup/project.ts';

// The real golang-migrate v4.18.3 (the db-migrate service, image pg-deploy-test/migrate:v4.18.3)
// driven through the tasks with DB_RUNTIME=docker, on a real engine. Each suite is its own Compose
// project (name, network, volume, port), removed in `after` even when a test failed.

/** Four migrations, each making one table, so every version has its own visible mark. */
const FOUR: Record<string, string> = {
  '000001_alpha.up.sql': 'CREATE TABLE alpha (id int PRIMARY KEY);\n',
  '000001_alpha.down.sql': 'DROP TABLE alpha;\n',
  '000002_beta.up.sql': 'CREATE TABLE beta (id int PRIMARY KEY, alpha_id int REFERENCES alpha);\n',
  '000002_beta.down.sql': 'DROP TABLE beta;\n',
  '000003_gamma.up.sql': 'CREATE TABLE gamma (id int PRIMARY KEY);\nINSERT INTO gamma VALUES (1), (2);\n',
  '000003_gamma.down.sql': 'DROP TABLE gamma;\n',
  '000004_delta.up.sql': 'CREATE TABLE delta (id int PRIMARY KEY);\n',
  '000004_delta.down.sql': 'DROP TABLE delta;\n',
};
const TABLES = ['alpha', 'beta', 'gamma', 'delta'];

interface Ctx {
  p?: DockerProject;
}

/** Which of `TABLES` exist, in order. */
const tables = (p: DockerProject) => existingTables(p, TABLES);

// ---------------------------------------------------------------------------------------------
const moves = engineSuite<Ctx>('golang-migrate through db:migrate on the docker runtime');

if (moves) {
  withStartedDockerProject(moves, FOUR);

  moves('db:migrate up 2 applies the first two migrations and records (2, clean) in the one row', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate', 'up', '2'], p.env);
    assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
    assert.equal(await tables(p), ['alpha', 'beta']);
  });

  moves('db:migrate applies the rest, and a second db:migrate prints golang-migrate\'s "no change" and exits 0', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate'], p.env);
    assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
    assert.equal(await tables(p), TABLES);
    const again = await ok(['db:migrate'], p.env);
    assert.match(output(again), /\bno change\b/);
    assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
  });

  moves('db:migrate down 2 rolls back the last two and leaves (2, clean)', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate', '--yes', 'down', '2'], p.env);
    assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
    assert.equal(await tables(p), ['alpha', 'beta']);
  });

  moves('db:migrate goto 3 goes up one, and goto 1 goes down two', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate', '--yes', 'goto', '3'], p.env);
    assert.equal(await versionRows(p), [{ version: 3, dirty: false }]);
    assert.equal(await tables(p), ['alpha', 'beta', 'gamma']);
    await ok(['db:migrate', '--yes', 'goto', '1'], p.env);
    assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
    assert.equal(await tables(p), ['alpha']);
  });

  moves('db:rollback rolls back the first migration: golang-migrate then leaves no row at all', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:rollback', '--yes'], p.env);
    assert.equal(await versionRows(p), []);
    assert.equal(await tables(p), []);
    const s = JSON.parse((await ok(['db:status', '--json'], p.env)).stdout);
    assert.equal([s.version, s.dirty, s.pending.length], [null, false, 4]);
  });

  moves('db:migrate:force 3 --yes records (3, clean) without running any file, and force -1 clears the row', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate:force', '3', '--yes'], p.env);
    assert.equal(await versionRows(p), [{ version: 3, dirty: false }]);
    assert.equal(await tables(p), [], 'force ran a migration');
    const s = JSON.parse((await ok(['db:status', '--json'], p.env)).stdout);
    assert.equal([s.version, s.dirty, s.pending.map((e: { version: number }) => e.version)], [3, false, [4]]);
    // Go's flag package would read a bare -1 as a flag: the task passes `force -- -1`.
    await ok(['db:migrate:force', '--yes', '--', '-1'], p.env);
    assert.equal(await versionRows(p), []);
    await ok(['db:migrate'], p.env);
    assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
    assert.equal(await tables(p), TABLES);
  });

  moves.run();
}

// ---------------------------------------------------------------------------------------------
const BROKEN = { ...FOUR, '000003_gamma.up.sql': 'CREATE TABLE gamma (id int PRIMARY KEY);\nCREAT TABLE oops (id int);\n' };

const failing = engineSuite<Ctx>('a migration that fails under golang-migrate');

if (failing) {
  withStartedDockerProject(failing, BROKEN);

  failing("db:migrate exits non-zero with golang-migrate's error, leaving (3, dirty) and the tables of 1 and 2 only", async (ctx) => {
    const p = ctx.p!;
    const r = await cli(['db:migrate'], p.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /migration failed: syntax error at or near "CREAT" \(column 1\) in line 2/);
    assert.match(r.stderr, /error: the db-migrate service exited with 1/);
    // golang-migrate's protocol: (3, dirty) committed before the file ran; the file itself, one
    // implicit transaction, was rolled back (gamma, its first statement, is not there).
    assert.equal(await versionRows(p), [{ version: 3, dirty: true }]);
    assert.equal(await tables(p), ['alpha', 'beta']);
  });

  failing("db:migrate on the dirty database refuses with golang-migrate's own words and changes nothing", async (ctx) => {
    const p = ctx.p!;
    const r = await cli(['db:migrate', 'up', '1'], p.env);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /^error: Dirty database version 3\. Fix and force version\.$/m);
    assert.equal(await versionRows(p), [{ version: 3, dirty: true }]);
  });

  failing('db:status names the dirty version, the file that stopped, and the exact force command, in text and in --json', async (ctx) => {
    const p = ctx.p!;
    const text = await ok(['db:status'], p.env);
    assert.match(text.stdout, /^version\s+3 \(DIRTY\b/m);
    assert.match(text.stdout, /000003_gamma\.up\.sql stopped part-way; its objects look not applied/);
    assert.match(text.stdout, /^fix\s+nothing of it is there: pnpm db:migrate:force 2, then pnpm db:migrate$/m);
    assert.match(text.stdout, /^\s+applied 000003_gamma\.up\.sql\s+DIRTY: stopped part-way$/m);
    const json = JSON.parse((await ok(['db:status', '--json'], p.env)).stdout);
    assert.is(json.runtime, 'docker');
    assert.is(json.version, 3);
    assert.is(json.dirty, true);
    assert.equal(
      json.applied.filter((e: { dirty?: boolean }) => e.dirty).map((e: { file: string }) => e.file),
      ['000003_gamma.up.sql'],
    );
    assert.equal(
      json.pending.map((e: { version: number }) => e.version),
      [4],
    );
    assert.match(json.problem, /000003_gamma\.up\.sql stopped part-way; its objects look not applied/);
    assert.match(json.fix, /pnpm db:migrate:force 2, then pnpm db:migrate/);
    const exit = await cli(['db:status', '--exit-code'], p.env);
    assert.is(exit.code, 1, output(exit));
  });

  failing('db:migrate:force 2 --yes, the file fixed, then db:migrate: version 4, clean, every table there', async (ctx) => {
    const p = ctx.p!;
    await ok(['db:migrate:force', '2', '--yes'], p.env);
    assert.equal(await versionRows(p), [{ version: 2, dirty: false }]);
    await fs.writeFile(path.join(p.migrationsDir, '000003_gamma.up.sql'), FOUR['000003_gamma.up.sql']);
    await ok(['db:migrate'], p.env);
    assert.equal(await versionRows(p), [{ version: 4, dirty: false }]);
    assert.equal(await tables(p), TABLES);
    assert.equal(await query(p, 'SELECT count(*)::int AS n FROM gamma'), [{ n: 2 }]);
    const s = JSON.parse((await ok(['db:status', '--json', '--exit-code'], p.env)).stdout);
    assert.equal([s.version, s.dirty, s.pending.length], [4, false, 0]);
  });

  failing.run();
}

// ---------------------------------------------------------------------------------------------
// golang-migrate's users' most reported problem (issues #332, #672, #1187, #1243): a password with
// characters a URL reserves. RFC 3986's gen-delims and sub-delims, the escape character followed by
// hex digits, quotes, a backslash, a dollar, spaces, and letters outside ASCII (precomposed, so
// SASLprep leaves them as they are).
const SPECIAL = `p@ss:w/rd?#[]%20&=+ é€ 密码 '"\\$!`;
const PASSWORDS = { migrate_password: `${SPECIAL} m`, app_password: `${SPECIAL} a` };

/** The password, and the ways a tool could have printed it: percent-encoded as a URL's userinfo would be. */
function forms(pw: string): string[] {
  const upper = [...new TextEncoder().encode(pw)]
    .map((b) =>
      /[A-Za-z0-9._~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
  return [pw, encodeURIComponent(pw), upper, upper.toLowerCase()];
}

interface PwCtx extends Ctx {
  runs: { args: string[]; r: CliResult }[];
}

const passwords = engineSuite<PwCtx>('passwords with URL-reserved and non-ASCII characters, under golang-migrate');

if (passwords) {
  setUp(passwords, async (ctx) => {
    ctx.runs = [];
    ctx.p = await makeDockerProject({
      migrations: {
        '000001_alpha.up.sql': 'CREATE TABLE alpha (id int PRIMARY KEY);\n',
        '000001_alpha.down.sql': 'DROP TABLE alpha;\n',
      },
    });
  });
  passwords.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });

  async function step(ctx: PwCtx, args: string[]): Promise<CliResult> {
    const r = await cli(args, ctx.p!.env);
    ctx.runs.push({ args, r });
    return r;
  }

  passwords(
    'db:secrets, then the passwords overwritten before the first db:up: db:secrets, db:secure and db:up accept them as written',
    async (ctx) => {
      const p = ctx.p!;
      const first = await step(ctx, ['db:secrets']);
      assert.is(first.code, 0, output(first));
      for (const [name, value] of Object.entries(PASSWORDS)) await fs.writeFile(path.join(p.secretsDir, name), value, { mode: 0o600 });
      for (const args of [['db:secrets'], ['db:secure'], ['db:up']]) {
        const r = await step(ctx, args);
        assert.is(r.code, 0, `${args.join(' ')}: ${output(r)}`);
      }
      for (const [name, value] of Object.entries(PASSWORDS)) {
        assert.is(await fs.readFile(path.join(p.secretsDir, name), 'utf8'), value, `${name} was changed`);
      }
      // db:up ends with verified TLS logins as both roles: the server holds these passwords.
      // And they log in with them from here, over verified TLS, as each role.
      for (const login of ['migrate', 'app'] as const) {
        const t = await appTarget(p, '127.0.0.1', login);
        assert.is(t.password, PASSWORDS[`${login}_password`]);
        assert.equal(await withClient(t, async (c) => (await c.query('SELECT current_user AS u')).rows), [{ u: t.user }]);
      }
    },
  );

  passwords(
    'golang-migrate logs in as the migration role with it: db:migrate applies, and the db-migrate output shows no form of it',
    async (ctx) => {
      const p = ctx.p!;
      const r = await step(ctx, ['db:migrate']);
      assert.is(r.code, 0, output(r));
      assert.match(r.stderr, /1\/u alpha/);
      assert.equal(await versionRows(p), [{ version: 1, dirty: false }]);
      assert.ok(await tableExists(p, 'alpha'));
    },
  );

  passwords('a failing golang-migrate run does not print it either', async (ctx) => {
    const p = ctx.p!;
    await fs.writeFile(path.join(p.migrationsDir, '000002_broken.up.sql'), 'SELECT no_such_function();\n');
    await fs.writeFile(path.join(p.migrationsDir, '000002_broken.down.sql'), 'SELECT 1;\n');
    const r = await step(ctx, ['db:migrate']);
    assert.is(r.code, 1, output(r));
    assert.match(r.stderr, /no_such_function/);
    assert.equal(await versionRows(p), [{ version: 2, dirty: true }]);
  });

  passwords("no output of any of these tasks, nor the project's container logs, holds a password in any form", async (ctx) => {
    const p = ctx.p!;
    assert.ok(ctx.runs.length >= 6, 'the earlier tests ran');
    const logs = await compose(p, ['logs', '--no-color']);
    for (const value of Object.values(PASSWORDS)) {
      for (const f of forms(value)) {
        for (const { args, r } of ctx.runs) assert.not.ok(output(r).includes(f), `${args.join(' ')} printed ${JSON.stringify(f)}`);
        assert.not.ok(logs.stdout.includes(f) || logs.stderr.includes(f), `the project's container logs hold ${JSON.stringify(f)}`);
      }
    }
  });

  passwords.run();
}

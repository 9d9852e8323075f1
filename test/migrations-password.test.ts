import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SECRET_NAMES } from '@dbkit/core/secrets';
import { withClient } from '@dbkit/core/pg';
import { appTarget, cli, makeProject, ownerTarget, removeProject, type CliResult, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';
import { output, versionRows } from './setup/engine.ts';

// RFC 3986's reserved characters (gen-delims and sub-delims), the escape character, quotes, a
// backslash, spaces, and letters outside ASCII (precomposed, so SASLprep leaves them as they are).
const SPECIAL = `:/?#[]@!$&'()*+,;=% "\\ äöüß Ωμέγα 密码`;

interface Ctx {
  p?: Project;
  passwords: string[];
  runs: { args: string[]; r: CliResult }[];
}

const pw = suite<Ctx>('passwords with URL-reserved characters, spaces and non-ASCII letters', { passwords: [], runs: [] });

setUp(pw, async (ctx) => {
  ctx.p = await makeProject({
    migrations: {
      '000001_accounts.up.sql': 'CREATE TABLE accounts (id int PRIMARY KEY);\n',
      '000001_accounts.down.sql': 'DROP TABLE accounts;\n',
      '000002_broken.up.sql': 'SELECT no_such_function();\n',
      '000002_broken.down.sql': 'SELECT 1;\n',
    },
  });
  await fs.mkdir(ctx.p.secretsDir, { mode: 0o700 });
  // Every role's password, written before db:secrets (which keeps existing files): 0600, no trailing newline.
  for (const name of SECRET_NAMES.filter((n) => n.endsWith('_password'))) {
    const value = `${SPECIAL} ${name}`;
    await fs.writeFile(path.join(ctx.p.secretsDir, name), value, { mode: 0o600 });
    ctx.passwords.push(value);
  }
});
pw.after(async (ctx) => {
  await removeProject(ctx.p);
});

async function step(ctx: Ctx, args: string[]): Promise<CliResult> {
  const r = await cli(args, ctx.p!.env);
  ctx.runs.push({ args, r });
  return r;
}

pw('db:secrets, db:secure and db:up start the server with them', async (ctx) => {
  for (const args of [['db:secrets'], ['db:secure'], ['db:up']]) {
    const r = await step(ctx, args);
    assert.is(r.code, 0, `${args.join(' ')}: ${output(r)}`);
  }
  for (const name of SECRET_NAMES.filter((n) => n.endsWith('_password'))) {
    assert.ok((await fs.readFile(path.join(ctx.p!.secretsDir, name), 'utf8')).startsWith(SPECIAL), `${name} was replaced`);
  }
});

pw('db:migrate and db:status log in with them over verified TLS', async (ctx) => {
  const up = await step(ctx, ['db:migrate', 'up', '1']);
  assert.is(up.code, 0, output(up));
  assert.is((await step(ctx, ['db:status'])).code, 0);
  assert.equal(await versionRows(ctx.p!), [{ version: 1, dirty: false }]);
  const broken = await step(ctx, ['db:migrate']);
  assert.is(broken.code, 1, output(broken));
  assert.match(broken.stderr, /000002_broken\.up\.sql:1: function no_such_function\(\) does not exist/);
  // The roles really have these passwords: a client we did not configure through the CLI logs in.
  for (const t of [await ownerTarget(ctx.p!), await appTarget(ctx.p!)]) {
    assert.ok(t.password.startsWith(SPECIAL));
    assert.is(await withClient(t, async (c) => (await c.query('SELECT 1 AS one')).rows[0].one), 1);
  }
});

pw('no password appears in any output or in the server log, raw or percent-encoded', async (ctx) => {
  assert.ok(ctx.runs.length >= 6);
  const forms = ctx.passwords.flatMap((s) => [s, encodeURIComponent(s)]);
  for (const { args, r } of ctx.runs) {
    for (const f of forms) assert.not.ok(output(r).includes(f), `${args.join(' ')} printed a password`);
    assert.not.ok(output(r).includes('密码'), `${args.join(' ')} printed part of a password`);
  }
  const log = await fs.readFile(path.join(ctx.p!.nativeDir, 'postgres.log'), 'utf8');
  for (const f of forms) assert.not.ok(log.includes(f), 'the server log holds a password');
  assert.not.ok(log.includes('密码'));
});

pw.run();

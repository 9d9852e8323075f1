import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { connect } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { task as secretsTask } from '../tasks/secrets.ts';
import { runTask } from '../tasks/cli.ts';
import {
  appTarget,
  cli,
  makeProject,
  ok,
  ownerTarget,
  readSecretFile,
  removeProject,
  withStartedProject,
  type Project,
} from './setup/project.ts';
import { testCtx } from './setup/ctx.ts';
import { everyRoleLogsIn } from './setup/backup.ts';
import prompts from 'prompts';
import { promptsAsk } from '@dbkit/core/confirm';

// db:secrets --force replaces the secret files only as a destructive task does: it asks (on
// stderr, default No; --yes answers; no terminal and no --yes refuses; a "no" fails), honours
// the production guard, keeps the old files, and refuses while a database cluster holds the
// roles the files name (new names or passwords would lock them out).

const NAMES = ['postgres_user', 'postgres_password', 'postgres_db', 'migrate_user', 'migrate_password', 'app_user', 'app_password'];

interface Ctx {
  p?: Project;
}

const snapshot = async (p: Project) => Object.fromEntries(await Promise.all(NAMES.map(async (n) => [n, await readSecretFile(p, n)])));
const keptDirs = async (p: Project) => (await fs.readdir(p.secretsDir)).filter((f) => f.startsWith('replaced-'));

// ---------------------------------------------------------------------------------------------
const noCluster = suite<Ctx>('db:secrets --force without a database cluster');

noCluster.before.each(async (ctx) => {
  ctx.p = await makeProject();
  ctx.p.env.DB_BACKUP_DIR = path.join(ctx.p.dir, 'backups');
  await ok(['db:secrets'], ctx.p.env);
});

noCluster.after.each(async (ctx) => {
  await removeProject(ctx.p);
});

noCluster('with no terminal and no --yes it refuses, non-zero, and changes nothing', async (ctx) => {
  const p = ctx.p!;
  const before = await snapshot(p);
  const r = await cli(['db:secrets', '--force'], p.env);
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /needs confirmation and there is no terminal to ask/);
  assert.match(r.stderr, /pnpm db:secrets --force --yes/);
  assert.equal(await snapshot(p), before);
  assert.equal(await keptDirs(p), []);
});

noCluster('it asks on stderr, default No; a "no" fails and changes nothing', async (ctx) => {
  const p = ctx.p!;
  const before = await snapshot(p);
  const asked: string[] = [];
  // The shared question (prompts, on stderr, default No), answered "no" as a person would; any
  // further prompt (the names db:secrets asks on a terminal) gets its default.
  prompts.inject([false]);
  const c = testCtx(p.env, { interactive: true, ask: async (q) => (asked.push(q), promptsAsk(q)) });
  const err = await runTask(secretsTask, c, { flags: { force: true }, positionals: [] }).then(
    () => undefined,
    (e) => e,
  );
  assert.equal(asked.length, 1, 'one question');
  assert.match(asked[0], /Replace 7 secret file\(s\).*postgres_password/);
  assert.match(String(err?.message), /db:secrets --force: aborted, nothing was changed/);
  assert.equal(await snapshot(p), before);
  assert.equal(await keptDirs(p), []);
});

noCluster('--yes replaces all seven and keeps the old ones in a private folder beside them', async (ctx) => {
  const p = ctx.p!;
  const before = await snapshot(p);
  const r = await cli(['db:secrets', '--force', '--yes'], p.env);
  assert.is(r.code, 0, r.stderr);
  const after = await snapshot(p);
  for (const n of ['postgres_password', 'migrate_password', 'app_password']) assert.is.not(after[n], before[n], `${n} is new`);
  const [kept] = await keptDirs(p);
  assert.ok(kept, 'a folder of the old files');
  assert.match(r.stdout, new RegExp(`the old files are in .*${kept}`));
  const dir = path.join(p.secretsDir, kept);
  assert.is((await fs.stat(dir)).mode & 0o777, 0o700);
  for (const n of NAMES) {
    assert.is(await fs.readFile(path.join(dir, n), 'utf8'), before[n], `${n} kept as it was`);
    assert.is((await fs.stat(path.join(dir, n))).mode & 0o777, 0o600);
  }
  for (const n of ['postgres_password', 'migrate_password', 'app_password'])
    assert.not.ok(r.stdout.includes(before[n]) || r.stderr.includes(before[n]), 'no password printed');
});

noCluster('NODE_ENV=production refuses even with --yes; --force-production goes ahead and is logged', async (ctx) => {
  const p = ctx.p!;
  const before = await snapshot(p);
  const env = { ...p.env, NODE_ENV: 'production' };
  const r = await cli(['db:secrets', '--force', '--yes'], env);
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /refused: NODE_ENV is production/);
  assert.match(r.stderr, /--force-production/);
  assert.equal(await snapshot(p), before);
  const forced = await cli(['db:secrets', '--force', '--yes', '--force-production'], env);
  assert.is(forced.code, 0, forced.stderr);
  assert.is.not((await snapshot(p)).postgres_password, before.postgres_password);
  const audit = (await fs.readFile(path.join(p.env.DB_BACKUP_DIR, 'audit.log'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.is(audit.length, 1);
  assert.is(audit[0].task, 'db:secrets --force');
  assert.is(audit[0].environment, 'production');
});

noCluster.run();

// ---------------------------------------------------------------------------------------------
const cluster = suite<Ctx>('db:secrets --force while a database cluster exists');

withStartedProject(cluster);

cluster(
  'running: even with --yes it refuses, names the roles that exist and the way to change a password, and changes nothing',
  async (ctx) => {
    const p = ctx.p!;
    const before = await snapshot(p);
    const r = await cli(['db:secrets', '--force', '--yes'], p.env);
    assert.is(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /^error: db:secrets --force refused: role app, role app_owner, role postgres, database app exist in the running database/m,
    );
    assert.match(r.stderr, /^hint: .*pnpm db:secrets:rotate/m);
    assert.equal(await snapshot(p), before);
    assert.equal(await keptDirs(p), []);
    await everyRoleLogsIn(p);
  },
);

cluster('stopped with data: it refuses too, and db:up still logs every role in', async (ctx) => {
  const p = ctx.p!;
  const before = await snapshot(p);
  await ok(['db:down'], p.env);
  const r = await cli(['db:secrets', '--force', '--yes'], p.env);
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /refused: PostgreSQL is stopped but .* holds a cluster/);
  assert.equal(await snapshot(p), before);
  await ok(['db:up'], p.env);
  await everyRoleLogsIn(p);
});

cluster('without --force it still only creates what is missing, and asks nothing', async (ctx) => {
  const p = ctx.p!;
  const before = await snapshot(p);
  const r = await cli(['db:secrets'], p.env);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^kept postgres_user, .*app_password in /m);
  assert.equal(await snapshot(p), before);
});

cluster.run();

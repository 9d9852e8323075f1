import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cli, ok, withStartedProject, type Project } from './setup/project.ts';
import { ownerQuery } from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { testCtx } from './setup/ctx.ts';
import { UserError } from '@dbkit/core/errors';
import { task as rollback } from '../tasks/rollback.ts';
import { tasks } from '../tasks/registry.ts';
import { runTask } from '../tasks/cli.ts';

// db:rollback runs down files, which drop tables with their rows: it asks like every destructive
// task, outside production too. --yes answers; no terminal and no --yes refuses and changes nothing.

const rows = async (p: Project) => (await ownerQuery(p, 'SELECT count(*)::int AS n FROM accounts'))[0].n as number;
const version = async (p: Project) => (await ownerQuery(p, 'SELECT version FROM schema_migrations'))[0]?.version;
const hasAccounts = async (p: Project) =>
  (await ownerQuery(p, "SELECT to_regclass('public.accounts') IS NOT NULL AS there"))[0].there as boolean;

async function untouched(p: Project) {
  assert.ok(await hasAccounts(p), 'the table is still there');
  assert.is(await rows(p), 3, 'with its rows');
  assert.is(Number(await version(p)), 1, 'the migration version is unchanged');
}

const asks = suite<{ p?: Project }>('db:rollback asks before it drops anything (development database)');

withStartedProject(asks, { migrate: [] });
asks.before.each(async ({ p }) => {
  if (!(await hasAccounts(p!))) await ok(['db:migrate'], p!.env);
  await ownerQuery(p!, 'TRUNCATE accounts');
  await ownerQuery(p!, "INSERT INTO accounts (email) SELECT 'r' || i || '@example.com' FROM generate_series(1, 3) i");
});

asks('with no terminal and no --yes it refuses, names --yes, and the table and its rows are still there', async ({ p }) => {
  const r = await cli(['db:rollback'], p!.env);
  assert.is(r.code, 1, r.stdout + r.stderr);
  failsClearly(r, /db:rollback needs confirmation and there is no terminal/, { hint: /--yes/ });
  await untouched(p!);
});

asks('on a terminal it asks once, and a "no" exits 1 with nothing rolled back', async ({ p }) => {
  const asked: string[] = [];
  const ctx = testCtx(p!.env, { interactive: true, ask: async (q) => (asked.push(q), false) });
  const err = await runTask(rollback, ctx, { flags: {}, positionals: [] }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, UserError);
  assert.is((err as UserError).exitCode, 1);
  assert.match((err as Error).message, /db:rollback: aborted, nothing was changed/);
  assert.is(asked.length, 1);
  assert.match(asked[0], /Roll back the last migration\?.*drop tables/);
  await untouched(p!);
});

asks('on a terminal a "yes" rolls back N, and the question says how many', async ({ p }) => {
  const asked: string[] = [];
  const ctx = testCtx(p!.env, { interactive: true, ask: async (q) => (asked.push(q), true) });
  await runTask(rollback, ctx, { flags: {}, positionals: ['2'] });
  assert.match(asked[0], /Roll back the last 2 migrations\?/);
  assert.not.ok(await hasAccounts(p!), 'rolled back');
});

asks('db:migrate down and goto ask as db:rollback does: no terminal and no --yes refuses and changes nothing', async ({ p }) => {
  for (const args of [
    ['down', '1'],
    ['down', '--all'],
    ['goto', '0'],
  ]) {
    const r = await cli(['db:migrate', ...args], p!.env);
    failsClearly(r, new RegExp(`db:migrate ${args[0]} needs confirmation and there is no terminal`), { hint: /--yes/ });
    await untouched(p!);
  }
});

asks('db:migrate down asks once on a terminal, saying what it rolls back; up never asks', async ({ p }) => {
  const asked: string[] = [];
  const ctx = testCtx(p!.env, { interactive: true, ask: async (q) => (asked.push(q), false) });
  const migrate = tasks.find((t) => t.name === 'db:migrate')!;
  const err = await runTask(migrate, ctx, { flags: {}, positionals: ['down', '1'] }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, UserError);
  assert.equal(asked.length, 1);
  assert.match(asked[0], /Roll back the last migration\?.*drop tables/);
  await untouched(p!);
  await runTask(
    migrate,
    testCtx(p!.env, {
      ask: async () => {
        assert.unreachable('up asked');
        return false;
      },
    }),
    { flags: {}, positionals: ['up'] },
  );
});

asks('--yes answers: it rolls back without a terminal', async ({ p }) => {
  const r = await cli(['db:rollback', '--yes'], p!.env);
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /rolled back/);
  assert.not.ok(await hasAccounts(p!), 'the down file ran');
});

asks.run();

// ---------------------------------------------------------------------------------------------
const meta = suite('destructive tasks are marked so, and each takes --yes');

meta('db:rollback is destructive, takes --yes, and its help says it asks', async () => {
  assert.ok(rollback.destructive);
  const r = await cli(['db:rollback', '--help'], {});
  assert.is(r.code, 0);
  assert.match(r.stdout, /Destroys data: asks first; --yes answers/);
  assert.match(r.stdout, /--yes, -y/);
});

meta('every destructive task in the registry takes --yes', () => {
  for (const t of tasks.filter((x) => x.destructive)) assert.ok(t.flags?.yes, `${t.name} has no --yes`);
});

meta.run();

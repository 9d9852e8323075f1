import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UsageError, UserError } from '@dbkit/core/errors';
import type { Ctx } from '@dbkit/core/context';
import { runTask } from '../tasks/cli.ts';
import { tasks } from '../tasks/registry.ts';
import type { Args, Task } from '../tasks/task.ts';
import { cli } from './setup/project.ts';
import { testCtx } from './setup/ctx.ts';

// The entry point reads `destructive` from each task: it refuses a run nobody can answer before
// the task starts, and hands the task one question (ctx.confirm) to ask where its guard allows.

/** The arguments that make each destructive task destroy something. */
const DESTROYING: Record<string, Args> = {
  'db:fresh': { flags: {}, positionals: [] },
  'db:delete': { flags: {}, positionals: [] },
  'db:restore': { flags: {}, positionals: [] },
  'db:rollback': { flags: {}, positionals: [] },
  'db:migrate:force': { flags: {}, positionals: ['1'] },
  'db:secrets': { flags: { force: true }, positionals: [] },
  'db:migrate': { flags: {}, positionals: ['down', '1'] },
  'db:promote': { flags: {}, positionals: [] },
};

/** `task` with a `run` that records its calls and, given `body`, does that with the context. */
function spy(task: Task<unknown>, body: (ctx: Ctx) => Promise<void> = async () => {}): Task<unknown> & { calls: number } {
  const t = { ...task, calls: 0 };
  t.run = async (ctx) => {
    t.calls++;
    await body(ctx);
  };
  return t;
}

const byName = (name: string) => tasks.find((t) => t.name === name)!;

const entry = suite('destructive tasks: the entry point asks, from the task metadata');

entry('the destructive tasks are exactly these, and each takes --yes', () => {
  assert.equal(
    tasks
      .filter((t) => t.destructive)
      .map((t) => t.name)
      .sort(),
    Object.keys(DESTROYING).sort(),
  );
  for (const t of tasks.filter((x) => x.destructive)) assert.is(t.flags?.yes?.short, 'y', t.name);
});

entry('with no terminal and no --yes, every destructive task is refused before it starts', async () => {
  for (const [name, args] of Object.entries(DESTROYING)) {
    const t = spy(byName(name));
    const err = await runTask(t, testCtx({}), args).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.instance(err, UserError, name);
    assert.is((err as UserError).exitCode, 1);
    assert.match((err as Error).message, /needs confirmation and there is no terminal to ask/);
    assert.match(String((err as UserError).hint), /--yes/);
    assert.is(t.calls, 0, `${name} did not start`);
  }
});

entry('a usage error comes before the refusal: exit 2, and the task does not start', async () => {
  const bad: [string, Args][] = [
    ['db:rollback', { flags: {}, positionals: ['two'] }],
    ['db:migrate:force', { flags: {}, positionals: ['x'] }],
    ['db:migrate', { flags: {}, positionals: ['down', 'two'] }],
    ['db:restore', { flags: { jobs: 'many' }, positionals: [] }],
  ];
  for (const [name, args] of bad) {
    const t = spy(byName(name));
    const err = await runTask(t, testCtx({}), args).catch((e: Error) => e);
    assert.instance(err, UsageError, name);
    assert.is((err as UsageError).exitCode, 2);
    assert.is(t.calls, 0);
  }
});

entry('the messages name db:secrets --force as typed', async () => {
  const err = await runTask(spy(byName('db:secrets')), testCtx({}), DESTROYING['db:secrets']).catch((e: Error) => e);
  assert.match(String((err as UserError).hint), /pnpm db:secrets --force --yes/);
});

entry('runs that destroy nothing are not refused: db:delete --dry-run, db:secrets without --force', async () => {
  for (const [name, flags] of [
    ['db:delete', { 'dry-run': true }],
    ['db:secrets', {}],
  ] as const) {
    const t = spy(byName(name));
    await runTask(t, testCtx({}), { flags, positionals: [] });
    assert.is(t.calls, 1, name);
  }
});

entry('on a terminal the question is asked once, however often the task calls confirm; a "no" fails with exit 1', async () => {
  const asked: string[] = [];
  const t = spy(byName('db:rollback'), async (ctx) => {
    await ctx.confirm('first?');
    await ctx.confirm('second?');
  });
  const yes = testCtx({}, { interactive: true, ask: async (q) => (asked.push(q), true) });
  await runTask(t, yes, { flags: {}, positionals: [] });
  assert.equal(asked, ['first?']);
  const no = testCtx({}, { interactive: true, ask: async () => false });
  const err = await runTask(t, no, { flags: {}, positionals: [] }).catch((e: Error) => e);
  assert.instance(err, UserError);
  assert.is((err as UserError).exitCode, 1);
  assert.match((err as Error).message, /^db:rollback: aborted, nothing was changed$/);
});

entry('--yes answers: nothing is asked, with or without a terminal', async () => {
  for (const interactive of [false, true]) {
    let asked = false;
    const t = spy(byName('db:fresh'), (ctx) => ctx.confirm('Delete?'));
    await runTask(t, testCtx({}, { interactive, ask: async () => ((asked = true), true) }), { flags: { yes: true }, positionals: [] });
    assert.is(t.calls, 1);
    assert.not.ok(asked);
  }
});

entry('a task that asks without being marked destructive is a bug, not a question', async () => {
  const t = spy(byName('db:status'), (ctx) => ctx.confirm('Really?'));
  const err = await runTask(t, testCtx({}, { interactive: true, ask: async () => true }), { flags: {}, positionals: [] }).catch(
    (e: Error) => e,
  );
  assert.ok(err instanceof Error && !(err instanceof UserError), String(err));
  assert.match((err as Error).message, /db:status asked for confirmation, but is not marked destructive/);
});

entry.run();

// ---------------------------------------------------------------------------------------------
const refusedFirst = suite<{ root: string }>('a refused destructive run touches nothing', { root: '' });

refusedFirst.before(async (ctx) => {
  ctx.root = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-cli-'));
});
refusedFirst.after(async (ctx) => fs.rm(ctx.root, { recursive: true, force: true }));

refusedFirst('db:restore without a terminal or --yes refuses in one line before it even looks for the backup', async ({ root }) => {
  const r = await cli(['db:restore', 'no-such-backup'], { DB_PROJECT_ROOT: root, DB_RUNTIME: 'native' });
  assert.is(r.code, 1, r.stdout + r.stderr);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('error: '));
  assert.equal(errors, ['error: db:restore needs confirmation and there is no terminal to ask']);
  assert.match(r.stderr, /^hint: .*pnpm db:restore --yes/m);
  assert.equal(await fs.readdir(root), [], 'nothing was made');
});

refusedFirst.run();

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cli, makeProject, removeProject, run, ROOT, type Project } from './setup/project.ts';
import { failsClearly } from './setup/assert.ts';
import { tasks } from '../tasks/registry.ts';
import { helpText } from '../tasks/help.ts';

// pnpm 10's own `help` command shadows our `help` script: `pnpm help db:up` prints pnpm's usage page.
// Every hint and the README must name a command that reaches our registry's help; these tests run
// each one through pnpm from the project root, exactly as printed.

/** The pnpm command a hint names: from `pnpm` to the end of the line. */
function commandOf(hint: string): string[] {
  const m = hint.match(/(?:^|\s)(pnpm [^\s;,]+(?: [^\s;,]+)*)$/);
  assert.ok(m, `the hint names no pnpm command at its end: ${hint}`);
  return m![1].split(' ');
}

/** Runs a command as a person would type it, from the project root, and says whether it printed our help. */
async function assertOurHelp(argv: string[], expected: string): Promise<void> {
  assert.is(argv[0], 'pnpm');
  const r = await run('pnpm', argv.slice(1), {});
  const shown = `${argv.join(' ')} printed:\n${r.stdout}${r.stderr}`;
  assert.is(r.code, 0, shown);
  assert.not.match(r.stdout, /Usage: pnpm|Version \d+\.\d+\.\d+ \(|No results for/, `pnpm's own help, not ours: ${shown}`);
  assert.ok(r.stdout.includes(expected), `not our registry's help: ${shown}`);
}

/** Our help for what a `... help [task]` command names. */
const expectedHelp = (argv: string[]) => helpText(tasks, argv[argv.indexOf('help') + 1]);

/** Settings that keep every task away from the checkout and from a Docker engine, should one run. */
const isolated = (p: Project) => ({ ...p.env, DOCKER_HOST: `unix://${path.join(p.dir, 'no-docker.sock')}` });

// ---------------------------------------------------------------------------------------------
const hints = suite<{ p?: Project; hints?: Map<string, string> }>('every hint of a usage error names a command that prints our help');

hints.before(async (ctx) => {
  ctx.p = await makeProject();
  ctx.hints = new Map();
});
hints.after(async (ctx) => removeProject(ctx.p));

hints("each task's unknown flag, each task's extra argument, an unknown task and an unknown help topic print a hint", async (ctx) => {
  const env = isolated(ctx.p!);
  const add = (hint: string, from: string) => ctx.hints!.set(commandOf(hint).join(' '), from);
  for (const t of tasks.filter((x) => !x.passThrough)) {
    add(
      failsClearly(await cli([t.name, '--no-such-flag'], env), new RegExp(`${t.name}: Unknown option '--no-such-flag'`), { code: 2 }).hint,
      `${t.name} --no-such-flag`,
    );
    const extra = ['extra0', 'extra1', 'extra2']; // more than any task but a pass-through one takes
    add(failsClearly(await cli([t.name, ...extra], env), /unexpected argument/, { code: 2 }).hint, `${t.name} ${extra.join(' ')}`);
  }
  add(failsClearly(await cli(['db:nope'], env), /unknown task "db:nope"/, { code: 2 }).hint, 'db:nope');
  add(failsClearly(await cli(['help', 'nope'], env), /no task named "nope"/, { code: 2 }).hint, 'help nope');
  // Each task's usage error points at that task's help; the others at the list.
  for (const t of tasks.filter((x) => !x.passThrough))
    assert.ok(ctx.hints!.has(`pnpm run help ${t.name}`), `${t.name}: ${[...ctx.hints!.keys()].join(', ')}`);
  assert.ok(ctx.hints!.has('pnpm run help'));
});

hints("each hinted command, run through pnpm from the project root, prints our registry's help", async (ctx) => {
  assert.ok(ctx.hints!.size, 'hints were collected');
  for (const [command, from] of ctx.hints!) {
    const argv = command.split(' ');
    await assertOurHelp(argv, expectedHelp(argv)).catch((e: Error) => {
      throw new Error(`the hint after "${from}" (${command}): ${e.message}`);
    });
  }
});

hints.run();

// ---------------------------------------------------------------------------------------------
const docs = suite('the README and the help name commands that work');

/** Every inline `code` span of a Markdown text. */
const spans = (md: string) => [...md.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]);

docs('no string in the tasks or the library tells anyone to run `pnpm help`', async () => {
  const files: string[] = [];
  for (const dir of ['tasks', 'packages/core/src']) {
    for (const f of await fs.readdir(path.join(ROOT, dir), { recursive: true })) if (f.endsWith('.ts')) files.push(path.join(dir, f));
  }
  for (const f of files) {
    // Comments may say why (`pnpm help` is pnpm's own); strings are what users read.
    const code = (await fs.readFile(path.join(ROOT, f), 'utf8')).replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    assert.not.match(code, /['"`][^'"`\n]*\bpnpm help\b/, `${f} prints "pnpm help"`);
  }
});

docs('the README names no `pnpm help`, and each `pnpm run help` it names prints our help through pnpm', async () => {
  const readme = await fs.readFile(path.join(ROOT, 'README.md'), 'utf8');
  const named = spans(readme).filter((s) => /^pnpm (run )?help\b/.test(s));
  // Where the README says why `run` is needed it may quote pnpm's command, but only with "pnpm's own" beside it.
  for (const s of named.filter((x) => x.startsWith('pnpm help'))) {
    const at = readme.indexOf(`\`${s}\``);
    assert.match(readme.slice(at, at + 80), /pnpm's own/, `the README tells a reader to run ${s}`);
  }
  const runnable = named.filter((s) => s.startsWith('pnpm run help'));
  assert.ok(runnable.length >= 2, `the README names ${runnable.join(', ') || 'no pnpm run help'}`);
  for (const s of new Set(runnable)) {
    const argv = s.replace(/<task>|\[task\]/, 'db:migrate').split(' ');
    await assertOurHelp(argv, expectedHelp(argv));
  }
});

docs('the help of `help` and the list show `pnpm run help`, which prints them', async () => {
  const own = await cli(['help', 'help'], {});
  assert.is(own.stdout.split('\n')[0], 'pnpm run help [task]');
  const list = await cli(['help'], {});
  assert.match(list.stdout.split('\n')[0], /pnpm run help <task>/);
  assert.not.match(list.stdout, /pnpm help/);
  await assertOurHelp(['pnpm', 'run', 'help', 'help'], helpText(tasks, 'help'));
});

docs.run();

// ---------------------------------------------------------------------------------------------
const extra = suite<{ p?: Project }>("extra positional arguments are a usage error, from each task's usage");

extra.before(async (ctx) => {
  ctx.p = await makeProject();
});
extra.after(async (ctx) => removeProject(ctx.p));

extra('db:up extra exits 2 with one error line and the hint, and starts nothing', async ({ p }) => {
  const hint = failsClearly(
    await cli(['db:up', 'extra'], isolated(p!)),
    /^error: db:up: unexpected argument "extra" \(db:up takes no arguments\)$/,
    { code: 2 },
  ).hint;
  assert.is(hint, 'pnpm run help db:up');
  assert.not.ok(
    await fs.stat(p!.nativeDir).then(
      () => true,
      () => false,
    ),
    'no data directory was made',
  );
  assert.not.ok(
    await fs.stat(p!.secretsDir).then(
      () => true,
      () => false,
    ),
    'no secrets were made',
  );
});

extra('a task that takes one argument refuses a second, naming it and its usage', async ({ p }) => {
  failsClearly(
    await cli(['db:rollback', '1', '2'], isolated(p!)),
    /^error: db:rollback: unexpected argument "2" \(db:rollback takes at most 1: \[N\]\)$/,
    { code: 2 },
  );
  failsClearly(await cli(['db:migrate:create', 'a', 'b'], isolated(p!)), /unexpected argument "b"/, { code: 2 });
  assert.equal(await fs.readdir(p!.migrationsDir).then((f) => f.filter((x) => /_a\./.test(x))), [], 'no migration was created');
  failsClearly(await cli(['db:migrate', 'up', '1', '2'], isolated(p!)), /unexpected argument "2" \(db:migrate takes at most 2: /, {
    code: 2,
  });
});

extra("how many positionals each task's usage shows", async () => {
  const { maxPositionals } = await import('../tasks/task.ts');
  const want: Record<string, number> = {
    '': 0,
    '[N]': 1,
    '<name>': 1,
    '<version>': 1,
    '[BACKUP]': 1,
    '[task]': 1,
    '[app | migrate | postgres]': 1,
    '[up [N] | down N | down --all | goto V]': 2,
    '[psql args...]': Infinity,
    '<a> [b [c]] | <d>': 3,
  };
  for (const [usage, n] of Object.entries(want)) assert.is(maxPositionals(usage), n, usage);
  assert.is(maxPositionals(undefined), 0, 'no usage: no arguments');
});

extra.run();

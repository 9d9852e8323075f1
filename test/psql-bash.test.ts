import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cli, run, CLI, withStartedProject, type CliResult, type Project } from './setup/project.ts';
import { engineSuite, makeDockerProject, removeDockerProject, startDockerProject, type DockerProject } from './setup/docker.ts';
import { setUp } from './setup/hooks.ts';

// db:psql and db:bash hand everything after the task name to psql or the shell, with or without a
// leading `--`, and our stdin too; their exit status is the task's.

const said = (r: CliResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

/** A script that fails half-way: under ON_ERROR_STOP psql stops there and exits 3. */
const FAILING_SCRIPT = 'SELECT 6 * 7;\nSELECT 1 / 0;\nSELECT 99;\n';

// ---------------------------------------------------------------------------------------------
const native = suite<{ p?: Project }>('db:psql and db:bash pass arguments, stdin and the exit status through (native)');

withStartedProject(native);

native('db:psql -c runs the statement without a `--`, as the help says', async ({ p }) => {
  const r = await cli(['db:psql', '-X', '-tA', '-c', 'SELECT 40 + 2'], p!.env);
  assert.is(r.code, 0, said(r));
  assert.is(r.stdout.trim(), '42');
});

native('db:psql -- -v ON_ERROR_STOP=1 -c with a failing statement exits non-zero', async ({ p }) => {
  const r = await cli(['db:psql', '--', '-X', '-v', 'ON_ERROR_STOP=1', '-c', 'select 1/0'], p!.env);
  assert.is(r.code, 1, said(r));
  assert.match(r.stderr, /division by zero/);
});

native("db:psql reads a script from stdin and exits with psql's status (3: ON_ERROR_STOP stopped it)", async ({ p }) => {
  const r = await cli(['db:psql', '-X', '-tA', '-v', 'ON_ERROR_STOP=1'], p!.env, { input: FAILING_SCRIPT });
  assert.is(r.code, 3, said(r));
  assert.is(r.stdout.trim(), '42', 'the statement before the failure ran, the one after did not');
  assert.match(r.stderr, /division by zero/);
  const good = await cli(['db:psql', '-X', '-tA'], p!.env, {
    input: 'SELECT current_user = (SELECT usename FROM pg_user WHERE usename = current_user);\n',
  });
  assert.is(good.code, 0, said(good));
  assert.is(good.stdout.trim(), 't');
});

native("db:psql --help is psql's, not ours", async ({ p }) => {
  const r = await cli(['db:psql', '--help'], p!.env);
  assert.is(r.code, 0, said(r));
  assert.match(r.stdout, /psql is the PostgreSQL interactive terminal/);
});

native("db:bash -- -c 'exit 7' and db:bash -c 'exit 7' both exit 7", async ({ p }) => {
  for (const args of [
    ['db:bash', '--', '-c', 'exit 7'],
    ['db:bash', '-c', 'exit 7'],
  ]) {
    const r = await cli(args, { ...p!.env, SHELL: '/bin/bash' });
    assert.is(r.code, 7, `${args.join(' ')}: ${said(r)}`);
  }
});

native('db:bash runs its arguments with the PG* variables set, and reads a script from stdin', async ({ p }) => {
  const r = await cli(['db:bash', '-c', 'psql -X -tA -c "SELECT 40 + 2" && echo "$PGSSLMODE"'], { ...p!.env, SHELL: '/bin/bash' });
  assert.is(r.code, 0, said(r));
  assert.equal(r.stdout.trim().split('\n'), ['42', 'verify-full']);
  const s = await cli(['db:bash'], { ...p!.env, SHELL: '/bin/bash' }, { input: 'echo "$PGPORT"\nexit 5\n' });
  assert.is(s.code, 5, said(s));
  assert.is(s.stdout.trim(), String(p!.port));
});

native(
  'through pnpm exactly as the README writes it: `pnpm db:psql -- ...`, `pnpm db:psql -c ...`, `pnpm db:bash -c ...`',
  async ({ p }) => {
    const env = { ...p!.env, SHELL: '/bin/bash' };
    const failing = await run('pnpm', ['--silent', 'db:psql', '--', '-X', '-v', 'ON_ERROR_STOP=1', '-c', 'select 1/0'], env);
    assert.is(failing.code, 1, said(failing));
    const plain = await run('pnpm', ['--silent', 'db:psql', '-X', '-tA', '-c', 'select 1'], env);
    assert.is(plain.code, 0, said(plain));
    assert.is(plain.stdout.trim(), '1');
    const piped = await run('pnpm', ['--silent', 'db:psql', '-X', '-tA', '-v', 'ON_ERROR_STOP=1'], env, { input: FAILING_SCRIPT });
    assert.is(piped.code, 3, said(piped));
    const shell = await run('pnpm', ['--silent', 'db:bash', '-c', 'exit 7'], env);
    assert.is(shell.code, 7, said(shell));
  },
);

native.run();

// ---------------------------------------------------------------------------------------------
const docker = engineSuite<{ p?: DockerProject; script?: string }>(
  'db:psql and db:bash pass arguments, stdin and the exit status through (real engine)',
);

if (docker) {
  setUp(docker, async (ctx) => {
    ctx.p = await makeDockerProject();
    await startDockerProject(ctx.p);
    ctx.script = path.join(ctx.p.dir, 'failing.sql');
    await fs.writeFile(ctx.script, FAILING_SCRIPT);
  });
  docker.after(async (ctx) => removeDockerProject(ctx.p));

  docker("db:psql -c without `--`, and psql's exit status from inside api-db", async ({ p }) => {
    const r = await cli(['db:psql', '-X', '-tA', '-c', 'SELECT 40 + 2'], p!.env);
    assert.is(r.code, 0, said(r));
    assert.is(r.stdout.trim(), '42');
    const f = await cli(['db:psql', '--', '-X', '-v', 'ON_ERROR_STOP=1', '-c', 'select 1/0'], p!.env);
    assert.is(f.code, 1, said(f));
    assert.match(f.stderr, /division by zero/);
  });

  docker("db:bash -c 'exit 7' exits 7 from inside api-db", async ({ p }) => {
    const r = await cli(['db:bash', '-c', 'exit 7'], p!.env);
    assert.is(r.code, 7, said(r));
  });

  // The user's case: stdout on a terminal, stdin a file. Compose allocates a TTY whenever stdout is a
  // terminal, and then refuses a stdin that is not one, unless told --no-TTY. script(1) gives the
  // command a terminal for stdout; its -e returns the command's exit status.
  docker("`db:psql < file.sql` with stdout on a terminal runs the file and exits with psql's status", async ({ p, script }) => {
    const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} db:psql -X -tA -v ON_ERROR_STOP=1 < ${JSON.stringify(script)}`;
    const r = await run('script', ['-qec', cmd, '/dev/null'], p!.env);
    assert.not.match(r.stdout, /not a TTY/i, said(r));
    assert.match(r.stdout, /^42\r?$/m, said(r));
    assert.match(r.stdout, /division by zero/);
    assert.is(r.code, 3, said(r));
  });

  docker.run();
}

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { cli, freePort, makeProject, ok, removeProject, startProject, type CliResult, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// A postmaster.pid whose pid now names another process (a crash, then a reboot that reused the pid),
// and ENV_DB_PORT changed while the server runs: each task says what it found and what to do, in
// one error line and one hint, or does it; none waits for its whole timeout or calls it a bug.

interface Ctx {
  p?: Project;
  sleeper?: ChildProcess;
}

/** A live process that is not PostgreSQL, as the server's user (who PostgreSQL would take for a rival) or as root. */
function sleeper(asServerUser: boolean): ChildProcess {
  const root = process.getuid?.() === 0;
  const user =
    asServerUser && root
      ? { uid: Number(execFileSync('id', ['-u', 'postgres'])), gid: Number(execFileSync('id', ['-g', 'postgres'])) }
      : {};
  return spawn('sleep', ['600'], { stdio: 'ignore', ...user });
}

/** A postmaster.pid as the server writes it, naming `pid`. */
async function stalePidFile(p: Project, pid: number): Promise<void> {
  const n = nativePaths(p.nativeDir);
  await fs.writeFile(
    path.join(n.data, 'postmaster.pid'),
    `${pid}\n${n.data}\n${Math.floor(Date.now() / 1000) - 3600}\n${p.port}\n${n.run}\n127.0.0.1\n  5432001     65536\nready   \n`,
    { mode: 0o600 },
  );
}

function noBug(r: CliResult, what: string): void {
  assert.not.match(r.stderr, /this looks like a bug/, `${what}: ${r.stderr}`);
  assert.not.match(r.stderr, /ECONNREFUSED|EPERM|did not answer within/, `${what}: ${r.stderr}`);
}

const stale = suite<Ctx>('a stale postmaster.pid naming a live process that is not the server');

setUp(stale, async (ctx) => {
  ctx.p = await makeProject();
  // A bound, not a measurement: today's code waited this long and then printed ECONNREFUSED.
  ctx.p.env.DB_UP_TIMEOUT = '15';
  await startProject(ctx.p);
  await ok(['db:down'], ctx.p.env);
});

stale.after(async (ctx) => {
  ctx.sleeper?.kill('SIGKILL');
  await removeProject(ctx.p);
});

for (const [who, asServerUser] of [
  ["the server's own user", true],
  ['root (or another user)', false],
] as const) {
  stale(
    `a pid of ${who}: db:status says the server is down, db:down says it was not running, db:up removes the file and starts`,
    async (ctx) => {
      const p = ctx.p!;
      ctx.sleeper = sleeper(asServerUser);
      try {
        await stalePidFile(p, ctx.sleeper.pid!);
        const st = await cli(['db:status'], p.env);
        noBug(st, 'db:status');
        assert.is(st.code, 0, st.stderr);
        assert.match(st.stdout, /server\s+DOWN \(pnpm db:up\)/);

        const down = await cli(['db:down'], p.env);
        noBug(down, 'db:down');
        assert.is(down.code, 0, down.stderr);
        assert.match(down.stdout, /PostgreSQL was not running/);
        assert.match(
          down.stderr,
          new RegExp(`removed a stale .*postmaster\\.pid: its pid ${ctx.sleeper.pid} is \`sleep 600\`, not this server`),
        );
        assert.ok(ctx.sleeper.exitCode === null && ctx.sleeper.signalCode === null, 'the unrelated process was not signalled');

        await stalePidFile(p, ctx.sleeper.pid!);
        const up = await cli(['db:up'], p.env);
        noBug(up, 'db:up');
        assert.is(up.code, 0, up.stderr);
        assert.match(up.stderr, /removed a stale .*postmaster\.pid/);
        assert.ok(ctx.sleeper.exitCode === null && ctx.sleeper.signalCode === null, 'the unrelated process still runs');
        await ok(['db:down'], p.env);
      } finally {
        ctx.sleeper.kill('SIGKILL');
      }
    },
  );
}

stale('a pid that no longer runs: db:up removes the file and starts', async (ctx) => {
  const p = ctx.p!;
  const gone = spawn('true');
  await new Promise((r) => gone.on('close', r));
  await stalePidFile(p, gone.pid!);
  const up = await cli(['db:up'], p.env);
  assert.is(up.code, 0, up.stderr);
  assert.match(up.stderr, new RegExp(`its pid ${gone.pid} no longer runs`));
  await ok(['db:down'], p.env);
});

stale.run();

const port = suite<Ctx & { other?: number }>('ENV_DB_PORT changed while the server runs');

setUp(port, async (ctx) => {
  ctx.p = await makeProject();
  ctx.p.env.DB_UP_TIMEOUT = '15';
  await startProject(ctx.p);
  ctx.other = await freePort();
});

port.after(async (ctx) => {
  await removeProject(ctx.p);
});

port('db:status, db:doctor, db:psql-free tasks and db:up name both ports and the way out; db:down then db:up moves it', async (ctx) => {
  const p = ctx.p!;
  const env = { ...p.env, ENV_DB_PORT: String(ctx.other) };
  const error = new RegExp(
    `^error: PostgreSQL runs from .* on port ${p.port}, but ENV_DB_PORT is ${ctx.other} \\(changed while it ran\\)$`,
    'm',
  );
  const hint = new RegExp(`^hint: restart it on ${ctx.other}: pnpm db:down && pnpm db:up \\(or set ENV_DB_PORT back to ${p.port}\\)$`, 'm');
  for (const task of [['db:status'], ['db:up'], ['db:migrate'], ['db:doctor']]) {
    const r = await cli(task, env);
    noBug(r, task[0]);
    assert.is(r.code, 1, `${task[0]}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, error, task[0]);
    assert.match(r.stderr, hint, task[0]);
  }
  const down = await ok(['db:down'], env);
  assert.match(down.stdout, /PostgreSQL stopped/);
  await ok(['db:up'], env);
  const st = await ok(['db:status'], env);
  assert.match(st.stdout, /server\s+up since/);
});

port.run();

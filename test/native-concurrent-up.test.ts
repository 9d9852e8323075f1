import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { withClient } from '@dbkit/core/pg';
import { CLI, ROOT, appTarget, cli, makeProject, ok, removeProject, type CliResult, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// db:up on the native runtime takes a lock in the native directory (up.lock: O_EXCL, the pid and
// its start time), so two at once on a fresh checkout do not both run initdb; initdb writes into a
// folder of its own, renamed into place, so nothing removes another's cluster.

async function fresh(): Promise<Project> {
  const p = await makeProject();
  await ok(['db:secrets'], p.env);
  await ok(['db:secure'], p.env);
  return p;
}

/** A pid that certainly names no process: one that has just ended. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(String(r.stdout).trim());
}

const appLogsIn = async (p: Project) =>
  withClient(await appTarget(p, '127.0.0.1'), async (c) => (await c.query('SELECT 1 AS one')).rows[0].one);

const both = suite('two db:up at once on a fresh checkout');

both('both succeed, one cluster is made, and the application logs in (three fresh checkouts)', async () => {
  for (let round = 1; round <= 3; round++) {
    const p = await fresh();
    try {
      const [a, b] = await Promise.all([cli(['db:up'], p.env), cli(['db:up'], p.env)]);
      const say = (r: CliResult) => `exit ${r.code}\n${r.stderr}`;
      assert.is(a.code, 0, `round ${round}, first: ${say(a)}`);
      assert.is(b.code, 0, `round ${round}, second: ${say(b)}`);
      const inits = [a, b].filter((r) => /initialising a new PostgreSQL cluster/.test(r.stderr)).length;
      assert.is(inits, 1, `round ${round}: exactly one ran initdb\n${say(a)}\n${say(b)}`);
      assert.is(await appLogsIn(p), 1);
      const left = (await fs.readdir(p.nativeDir)).filter((n) => /^data\.initdb-|^\.pw-|^up\.lock/.test(n));
      assert.equal(left, [], 'no lock, initdb folder or password file is left');
    } finally {
      await removeProject(p);
    }
  }
});

both.run();

const stale = suite<{ p?: Project }>('what a killed db:up leaves does not stop the next one');

setUp(stale, async (ctx) => {
  ctx.p = await fresh();
});

stale.after(async (ctx) => {
  await removeProject(ctx.p);
});

stale("a lock whose process has ended, a killed initdb's folder and password file: taken over and removed", async ({ p }) => {
  const dir = p!.nativeDir;
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const dead = deadPid();
  await fs.writeFile(path.join(dir, 'up.lock'), `${dead} 12345\n`, { mode: 0o600 });
  await fs.mkdir(path.join(dir, `data.initdb-${dead}`));
  await fs.writeFile(path.join(dir, `data.initdb-${dead}`, 'PG_VERSION'), '16\n');
  await fs.writeFile(path.join(dir, `.pw-${dead}`), 'an old superuser password', { mode: 0o600 });
  // An older version's initdb, killed in place: a data directory without PG_VERSION.
  await fs.mkdir(path.join(dir, 'data', 'base'), { recursive: true });
  const r = await cli(['db:up'], p!.env);
  assert.is(r.code, 0, r.stderr);
  assert.not.match(r.stderr, /waiting for it/, 'a dead holder is not waited for');
  assert.match(r.stderr, /removed .*data: it held no cluster/);
  assert.equal(
    (await fs.readdir(dir)).filter((n) => /^data\.initdb-|^\.pw-|^up\.lock/.test(n)),
    [],
  );
  assert.is(await appLogsIn(p!), 1);
  await ok(['db:down'], p!.env);
});

stale('db:up killed while initdb runs: the next db:up makes the cluster and succeeds', async () => {
  const p = await fresh();
  try {
    const child = spawn(process.execPath, [CLI, 'db:up'], {
      cwd: ROOT,
      env: { ...process.env, CI: 'true', ...p.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const closed = new Promise((r) => child.on('close', r));
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
      if (/initialising/.test(err)) child.kill('SIGKILL');
    });
    await closed;
    assert.match(err, /initialising/, 'it was killed while it made the cluster');
    const r = await cli(['db:up'], p.env);
    assert.is(r.code, 0, r.stderr);
    assert.is(await appLogsIn(p), 1);
    assert.equal(
      (await fs.readdir(p.nativeDir)).filter((n) => /^data\.initdb-|^\.pw-|^up\.lock/.test(n)),
      [],
    );
  } finally {
    await removeProject(p);
  }
});

stale.run();

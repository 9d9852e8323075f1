import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { CLI, ROOT, cli, ok, removeProject, startProject, type Project } from './setup/project.ts';
import { backupProject, ownerQuery, suQuery } from './setup/backup.ts';
import { setUp } from './setup/hooks.ts';

// A backup, verification or restore killed at any moment: its client tools die with it, what it
// wrote is the owner's only from the start, and the next run removes what it left and succeeds.

const TOOLS = new Set(['pg_dump', 'pg_dumpall', 'pg_restore', 'psql', 'sleep']);

/** Client-tool processes (and the probe's sleeps) whose command line names `mark`. */
async function toolProcesses(mark: string): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const argv = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
    if (argv.length && TOOLS.has(path.basename(argv[0]).replace(/\.real$/, '')) && argv.some((a) => a.includes(mark)))
      out.push(`${pid}: ${argv.join(' ')}`);
  }
  return out;
}

/** Waits (bounded, not timed) until no client tool naming `mark` runs; the survivors, if any. */
async function toolsGone(mark: string, boundMs = 15_000): Promise<string[]> {
  const end = Date.now() + boundMs;
  for (;;) {
    const left = await toolProcesses(mark);
    if (!left.length || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Waits (bounded) until the server runs no statement for a client that is gone: a backend learns
 * that its client died only when it next talks to it, so a CREATE DATABASE in flight still commits.
 */
async function serverQuiet(p: Project, boundMs = 15_000): Promise<void> {
  const end = Date.now() + boundMs;
  const busy =
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (application_name LIKE 'pg-deploy%' OR application_name IN ('pg_dump', 'pg_dumpall', 'pg_restore', 'psql'))";
  while (((await suQuery(p, busy, 'postgres'))[0].n as number) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
}

/** Every file and folder under `dir` whose mode lets anyone but the owner in. */
async function loose(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    const st = await fs.lstat(p).catch(() => undefined);
    if (!st) continue; // removed meanwhile
    if (st.mode & 0o077) out.push(`${p} ${(st.mode & 0o777).toString(8)}`);
    if (e.isDirectory()) out.push(...(await loose(p)));
  }
  return out;
}

/** What must not be there once a run succeeded: hidden entries and temporary files in the backup folder, scratch databases. */
async function debris(p: Project): Promise<string[]> {
  const dir = p.env.DB_BACKUP_DIR;
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.name.startsWith('.')) out.push(e.name);
    else if (e.isDirectory())
      for (const f of await fs.readdir(path.join(dir, e.name))) if (/\.tmp$|\.tar$/.test(f)) out.push(`${e.name}/${f}`);
  }
  const dbs = await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%'", 'postgres');
  return [...out, ...dbs.map((r) => `database ${r.datname}`)];
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * Runs the CLI and sends `signal` at one point: when its stderr has `afterLines` lines, or `afterMs`
 * after the start (whichever is given). A run that ends first is simply over.
 */
function runAndKill(
  args: string[],
  env: Record<string, string>,
  at: { afterLines?: number; afterMs?: number },
  signal: NodeJS.Signals,
): Promise<Run & { killed: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, CI: 'true', NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let killed = false;
    const kill = () => {
      if (!killed && child.exitCode === null) {
        killed = true;
        child.kill(signal);
      }
    };
    child.stdout.resume();
    child.stderr.on('data', (d) => {
      stderr += d;
      if (at.afterLines !== undefined && stderr.split('\n').length - 1 >= at.afterLines) kill();
    });
    const timer = at.afterMs !== undefined ? setTimeout(kill, at.afterMs) : undefined;
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, signal: sig, stderr, killed });
    });
  });
}

// ---------------------------------------------------------------------------------------------
const group = suite('a command the tool starts dies with the tool');

group('SIGKILL of the tool ends the child it was waiting for, and the umask makes its files private', async () => {
  const dir = await fs.mkdtemp('/tmp/pgdeploy-group-');
  try {
    // A sleep whose command line names this folder, so that it is told from every other sleep.
    await fs.symlink(await fs.realpath('/bin/sleep'), `${dir}/sleep`);
    const script = `
      import { zxExec } from '@dbkit/core/exec';
      const exec = zxExec({ ...process.env });
      await exec('sh', ['-c', 'echo x > "$1"', 'sh', ${JSON.stringify(`${dir}/made`)}], { umask: 0o077 });
      console.log('ready');
      await exec(${JSON.stringify(`${dir}/sleep`)}, ['300']).catch(() => {});
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve) => child.stdout.on('data', (d) => String(d).includes('ready') && resolve()));
    const end = Date.now() + 15_000;
    while (!(await toolProcesses(dir)).length && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    assert.ok((await toolProcesses(dir)).length, 'the child runs');
    child.kill('SIGKILL');
    assert.equal(await toolsGone(dir), [], 'no child outlives the tool');
    assert.is((await fs.stat(`${dir}/made`)).mode & 0o777, 0o600, 'created under umask 077');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

group.run();

// ---------------------------------------------------------------------------------------------
interface Ctx {
  p?: Project;
  /** A full run's length and its stderr lines: the points to kill at. */
  fullMs?: number;
  lines?: number;
}

/** A running, migrated project with enough rows that pg_dump and pg_restore run for a while, and a kill lands inside them. */
async function fillerProject(): Promise<Project> {
  const p = await backupProject();
  await startProject(p);
  await ok(['db:migrate'], p.env);
  await ownerQuery(
    p,
    `CREATE TABLE filler (id bigint PRIMARY KEY, body text NOT NULL);
    INSERT INTO filler SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 200000) i`,
  );
  return p;
}

const backup = suite<Ctx>('db:backup --verify killed at many points');

setUp(backup, async (ctx) => {
  ctx.p = await fillerProject();
  const t0 = Date.now();
  const r = await ok(['db:backup', '--verify'], ctx.p.env);
  ctx.fullMs = Date.now() - t0;
  ctx.lines = r.stderr.split('\n').length - 1;
});

backup.after(async (ctx) => {
  await removeProject(ctx.p);
});

/** One kill, then what must hold: no tool left running, private files, and the next run succeeds and leaves nothing. */
async function killAndRecover(
  p: Project,
  args: string[],
  at: { afterLines?: number; afterMs?: number },
  signal: NodeJS.Signals,
  label: string,
): Promise<void> {
  const k = await runAndKill(args, p.env, at, signal);
  assert.equal(await toolsGone(p.dir), [], `${label}: client tools outlived the tool`);
  assert.equal(await loose(p.env.DB_BACKUP_DIR), [], `${label}: files others could read`);
  const next = await cli(args, p.env);
  assert.is(next.code, 0, `${label} (${k.killed ? `killed by ${signal}` : 'ran to its end'}): the next run failed\n${next.stderr}`);
  assert.equal(await debris(p), [], `${label}: left behind after the next run\n${next.stderr}`);
  assert.equal(await toolsGone(p.dir), [], `${label}: client tools after the next run`);
}

backup('pg_dump waiting on a lock is ended when the tool is killed (SIGKILL, SIGTERM), not left waiting', async (ctx) => {
  const p = ctx.p!;
  const { connect } = await import('@dbkit/core/pg');
  const { superuser } = await import('./setup/backup.ts');
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    // The table is locked, so pg_dump (and the tool) wait for as long as the lock is held.
    const holder = await connect(await superuser(p));
    try {
      await holder.query('BEGIN; LOCK TABLE filler IN ACCESS EXCLUSIVE MODE');
      const child = spawn(process.execPath, [CLI, 'db:backup'], {
        cwd: ROOT,
        env: { ...process.env, CI: 'true', ...p.env },
        stdio: 'ignore',
      });
      const closed = new Promise((r) => child.on('close', r));
      const end = Date.now() + 30_000;
      // From another session: within the holder's transaction, pg_stat_activity is read once and kept.
      const waiting = async () =>
        ((
          await suQuery(
            p,
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'",
          )
        )[0].n as number) > 0;
      while (!(await waiting()) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      assert.ok(await waiting(), 'pg_dump waits on the lock');
      child.kill(signal);
      await closed;
      assert.equal(await toolsGone(p.dir, 10_000), [], `${signal}: pg_dump still waits after the tool died`);
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
    }
    await toolsGone(p.dir);
  }
  await ok(['db:backup'], p.env);
  assert.equal(await debris(p), []);
});

backup(
  'at each line of its output, and at ten moments across a run: tools die, files are private, the next run succeeds and nothing is left',
  async (ctx) => {
    const p = ctx.p!;
    const args = ['db:backup', '--verify'];
    for (let l = 1; l <= ctx.lines!; l++) await killAndRecover(p, args, { afterLines: l }, 'SIGKILL', `at line ${l}`);
    const signals: NodeJS.Signals[] = [
      'SIGKILL',
      'SIGKILL',
      'SIGTERM',
      'SIGKILL',
      'SIGINT',
      'SIGKILL',
      'SIGKILL',
      'SIGTERM',
      'SIGKILL',
      'SIGKILL',
    ];
    for (let i = 0; i < signals.length; i++) {
      const ms = Math.round((0.85 * ctx.fullMs! * (i + 0.5)) / signals.length);
      await killAndRecover(p, args, { afterMs: ms }, signals[i], `${signals[i]} after ${ms} ms`);
    }
  },
);

backup('a directory-format backup with two jobs, killed while it dumps and while it restores', async (ctx) => {
  const p = ctx.p!;
  const args = ['db:backup', '--verify', '--format', 'dir', '--jobs', '2'];
  for (let i = 1; i <= 4; i++)
    await killAndRecover(p, args, { afterMs: Math.round((ctx.fullMs! * i) / 4) }, 'SIGKILL', `dir format, ${i}/4 of a run`);
});

backup('db:backup:verify killed while pg_restore runs: the scratch database goes with the next run', async (ctx) => {
  const p = ctx.p!;
  for (let i = 1; i <= 3; i++)
    await killAndRecover(
      p,
      ['db:backup:verify'],
      { afterMs: Math.round((ctx.fullMs! * i) / 6) },
      'SIGKILL',
      `verify, ${i}/6 of a backup's run`,
    );
});

backup('db:status and db:doctor name a leftover they cannot remove, with the command that does', async (ctx) => {
  const p = ctx.p!;
  // A scratch database whose pid still runs (this test's), so nothing may remove it.
  const name = `pgdeploy_verify_${process.pid}_0badc0de`;
  await suQuery(p, `CREATE DATABASE ${name}`, 'postgres');
  try {
    const st = await cli(['db:status'], p.env);
    assert.is(st.code, 0, st.stderr);
    assert.match(
      st.stdout,
      new RegExp(
        `leftover  database ${name}: the scratch database of a verification; not removed: pid ${process.pid} still runs; .*DROP DATABASE "${name}"`,
      ),
    );
    const doc = await cli(['db:doctor'], p.env);
    assert.match(doc.stdout, new RegExp(`WARN  leftovers .*${name}`));
    assert.match(doc.stdout, /fix: .*DROP DATABASE/);
    await ok(['db:backup:verify'], p.env);
    assert.is(
      (await suQuery(p, `SELECT count(*)::int AS n FROM pg_database WHERE datname = '${name}'`, 'postgres'))[0].n,
      1,
      "a live pid's database is kept",
    );
  } finally {
    await suQuery(p, `DROP DATABASE IF EXISTS ${name}`, 'postgres');
  }
});

backup.run();

// ---------------------------------------------------------------------------------------------
const restore = suite<Ctx>('db:restore killed while pg_restore runs');

setUp(restore, async (ctx) => {
  ctx.p = await fillerProject();
  await ok(['db:backup', '--verify'], ctx.p.env);
  const t0 = Date.now();
  await ok(['db:restore', '--yes', '--no-backup'], ctx.p.env);
  ctx.fullMs = Date.now() - t0;
});

restore.after(async (ctx) => {
  await removeProject(ctx.p);
});

restore(
  'pg_restore dies with the tool; what is left is removed or named by db:status with its command; the next restore succeeds',
  async (ctx) => {
    const p = ctx.p!;
    for (let i = 1; i <= 3; i++) {
      const k = await runAndKill(['db:restore', '--yes', '--no-backup'], p.env, { afterMs: Math.round((ctx.fullMs! * i) / 4) }, 'SIGKILL');
      assert.equal(await toolsGone(p.dir), [], `kill ${i}: pg_restore outlived the tool`);
      await serverQuiet(p);
      const st = await cli(['db:status'], p.env);
      assert.is(st.code, 0, `kill ${i} (${k.killed ? 'killed' : 'ended'}): db:status failed\n${st.stderr}`);
      const left = (await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%'", 'postgres')).map((r) =>
        String(r.datname),
      );
      for (const d of left)
        assert.match(
          st.stdout,
          new RegExp(`leftover  database ${d}: .*(removes it|DROP DATABASE "${d}")`),
          `db:status names ${d} with its command:\n${st.stdout}\n${st.stderr}`,
        );
      await ok(['db:restore', '--yes', '--no-backup'], p.env);
      const n = await ownerQuery(p, 'SELECT count(*)::int AS n FROM filler');
      assert.is(n[0].n, 200000);
      for (const d of left) await suQuery(p, `DROP DATABASE IF EXISTS "${d}"`, 'postgres');
    }
  },
);

restore.run();

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ROOT, cli, makeProject, ok, removeProject, startProject, type Project } from './setup/project.ts';
import { backupDirState, ownerQuery, suQuery } from './setup/backup.ts';
import { setUp } from './setup/hooks.ts';
import { rejection } from './setup/assert.ts';
import { testCtx } from './setup/ctx.ts';
import { fetchWheel } from '@dbkit/core/images';
import { findClientTools, nativeToolRunner } from '@dbkit/core/runtime/tools';

// The native runtime's client tools against the embedded PostgreSQL 16 server, with real tools of
// three majors side by side: Debian 12's 15 (on PATH and behind pg_config), PostgreSQL 16.2 from
// PyPI's pgserver wheel (the one the stand-in image uses), and Debian 13's 17 (postgresql-client-17,
// fetched the way .ci/engine.sh fetches Debian 13 packages, unpacked, never installed; it needs
// Debian 13's C library, so it runs through that library's loader). Each test puts the tools it
// means on PATH (and a pg_config that names a bin directory) and nothing else changes.

const CACHE =
  process.env.PGDEPLOY_PG17_DIR || (process.getuid?.() === 0 ? '/var/cache/pg-deploy-pg17' : path.join(os.tmpdir(), 'pg-deploy-pg17'));
const TOOLS = ['pg_dump', 'pg_dumpall', 'pg_restore', 'psql'];
const PATH = process.env.PATH ?? '';

/**
 * Debian 13's postgresql-client-17 with its libpq and C library, unpacked in CACHE, and a folder of
 * wrappers that run each tool (next to a copy of it named `*.real`, so that pg_dumpall finds pg_dump
 * beside itself) through Debian 13's loader. Throws when Debian's archive cannot be reached.
 */
async function pg17(): Promise<string> {
  const rootfs = path.join(CACHE, 'root');
  if (!existsSync(path.join(rootfs, 'usr/lib/postgresql/17/bin/pg_restore'))) {
    await fs.mkdir(path.join(CACHE, 'lists/partial'), { recursive: true });
    await fs.mkdir(path.join(CACHE, 'cache/archives/partial'), { recursive: true });
    await fs.mkdir(path.join(CACHE, 'debs'), { recursive: true });
    await fs.writeFile(path.join(CACHE, 'sources.list'), 'deb http://deb.debian.org/debian trixie main\n');
    const apt = [
      '-o',
      `Dir::Etc::SourceList=${CACHE}/sources.list`,
      '-o',
      'Dir::Etc::SourceParts=/dev/null',
      '-o',
      `Dir::State::Lists=${CACHE}/lists`,
      '-o',
      `Dir::Cache=${CACHE}/cache`,
    ];
    execFileSync('apt-get', [...apt, 'update', '-qq'], { stdio: 'pipe' });
    execFileSync('apt-get', [...apt, 'download', 'postgresql-client-17', 'libpq5', 'libldap2', 'libc6'], {
      cwd: path.join(CACHE, 'debs'),
      stdio: 'pipe',
    });
    for (const deb of await fs.readdir(path.join(CACHE, 'debs'))) execFileSync('dpkg-deb', ['-x', path.join(CACHE, 'debs', deb), rootfs]);
  }
  const dir = path.join(CACHE, 'bin');
  const lib = path.join(rootfs, 'usr/lib/x86_64-linux-gnu');
  await fs.mkdir(dir, { recursive: true });
  for (const t of TOOLS) {
    await fs.copyFile(path.join(rootfs, 'usr/lib/postgresql/17/bin', t), path.join(dir, `${t}.real`));
    await fs.writeFile(
      path.join(dir, t),
      `#!/bin/sh\nexec ${rootfs}/usr/lib64/ld-linux-x86-64.so.2 --library-path ${lib}:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu "$(dirname "$0")/${t}.real" "$@"\n`,
      { mode: 0o755 },
    );
  }
  const v = spawnSync(path.join(dir, 'pg_restore'), ['--version']);
  if (v.status !== 0) throw new Error(`Debian 13's pg_restore does not run here: ${v.stderr}`);
  return dir;
}

/** pgserver's PostgreSQL 16.2 client tools (the stand-in image's), unpacked from the wheel images:build fetched (or fetches). */
async function pg16(into: string): Promise<string> {
  const cache = path.join(ROOT, '.cache/images');
  await fs.mkdir(cache, { recursive: true });
  const wheel = await fetchWheel(testCtx({}), cache); // the stand-in image's pinned wheel, hash checked
  const unpacked = path.join(into, 'wheel');
  execFileSync('python3', ['-m', 'zipfile', '-e', wheel, unpacked]);
  const dir = path.join(into, 'pg16');
  await fs.mkdir(dir);
  for (const t of TOOLS) {
    const real = path.join(unpacked, 'pgserver/pginstall/bin', t);
    await fs.chmod(real, 0o755);
    await fs.symlink(real, path.join(dir, t));
  }
  return dir;
}

/** A folder with a pg_config that names `bindir`, as another installation's would. */
async function pgConfigFor(into: string, bindir: string): Promise<string> {
  const dir = path.join(into, `pg_config-${path.basename(bindir)}`);
  await fs.mkdir(dir);
  await fs.writeFile(path.join(dir, 'pg_config'), `#!/bin/sh\n[ "$1" = --bindir ] && echo ${bindir}\n`, { mode: 0o755 });
  return dir;
}

/** Client tools (`tools`, TOOLS unless said) that say they are PostgreSQL `major` and do nothing else. */
async function fakeTools(into: string, major: number, tools: readonly string[] = TOOLS): Promise<string> {
  const dir = path.join(into, `fake${major}`);
  await fs.mkdir(dir);
  for (const t of tools) {
    await fs.writeFile(
      path.join(dir, t),
      `#!/bin/sh\n[ "$1" = --version ] && echo "${t} (PostgreSQL) ${major}.1" && exit 0\necho "${t}: fake, never to be run" >&2\nexit 3\n`,
      { mode: 0o755 },
    );
  }
  return dir;
}

interface Ctx {
  p?: Project;
  tmp?: string;
  dir16?: string;
  dir17?: string;
  skip17?: string;
}

const tools = suite<Ctx>('client tools of another major than the server (embedded PostgreSQL 16)');

setUp(tools, async (ctx) => {
  ctx.tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-tools-'));
  await fs.chmod(ctx.tmp, 0o755);
  ctx.dir16 = await pg16(ctx.tmp);
  ctx.dir17 = await pg17().catch((e) => {
    ctx.skip17 = (e as Error).message.split('\n')[0];
    return undefined;
  });
  if (ctx.skip17) console.log(`client-tools tests with PostgreSQL 17 not run: ${ctx.skip17}`);
  ctx.p = await makeProject();
  ctx.p.env.DB_BACKUP_DIR = path.join(ctx.p.dir, 'backups');
  await startProject(ctx.p, { migrate: [] });
  await ownerQuery(
    ctx.p,
    `CREATE TABLE notes (id serial PRIMARY KEY, body text);
    INSERT INTO notes (body) SELECT 'note ' || i FROM generate_series(1, 500) i;
    -- A row that is the very statement pg_restore 17 adds: the filter must never touch data.
    INSERT INTO notes (body) VALUES ('SET transaction_timeout = 0;');`,
  );
});

tools.after(async (ctx) => {
  await removeProject(ctx.p);
  if (ctx.tmp) await fs.rm(ctx.tmp, { recursive: true, force: true });
});

const notes = async (p: Project) =>
  (
    await ownerQuery(p, "SELECT count(*)::int AS n, count(*) FILTER (WHERE body = 'SET transaction_timeout = 0;')::int AS set FROM notes")
  )[0];

tools("with 15, 16 and 17 installed, the server's own 16 is taken, though pg_config names 17", async (ctx) => {
  if (ctx.skip17) return;
  const p = ctx.p!;
  const env = { ...p.env, PATH: `${await pgConfigFor(ctx.tmp!, ctx.dir17!)}:${ctx.dir16}:${PATH}` };
  const r = await cli(['db:backup', '--verify', '--json'], env);
  assert.is(r.code, 0, r.stderr);
  assert.not.match(r.stderr, /through psql/);
  const dump = path.join(p.env.DB_BACKUP_DIR, JSON.parse(r.stdout).name, 'db.dump');
  const toc = execFileSync(path.join(ctx.dir16!, 'pg_restore'), ['--list', dump]).toString();
  assert.match(toc, /Dumped by pg_dump version: 16\./, 'pg_dump 16 made it');
});

tools(
  "with only 17 (and the older 15), backups verify and restore: pg_restore 17's script goes through psql 17 without SET transaction_timeout",
  async (ctx) => {
    if (ctx.skip17) return;
    const p = ctx.p!;
    const env = { ...p.env, PATH: `${ctx.dir17}:${PATH}` };
    const before = await notes(p);
    for (const args of [
      ['db:backup', '--verify', '--json'],
      ['db:backup', '--verify', '--json', '--format', 'dir', '--jobs', '2'],
    ]) {
      const r = await cli(args, env);
      assert.is(r.code, 0, `${args.join(' ')}\n${r.stderr}`);
      assert.match(
        r.stderr,
        /pg_restore 17 into a PostgreSQL 16 server: through psql, in one session \(install postgresql-client-16 for pg_restore's own, and --jobs\)/,
      );
      assert.is(JSON.parse(r.stdout).verified, true);
    }
    await ownerQuery(p, 'DELETE FROM notes');
    const restored = await cli(['db:restore', '--yes', '--no-backup'], env);
    assert.is(restored.code, 0, restored.stderr);
    assert.equal(await notes(p), before, 'every row is back, the one that reads like the filtered statement too');
  },
);

tools('a restore through psql that fails leaves the database as it was', async (ctx) => {
  if (ctx.skip17) return;
  const p = ctx.p!;
  const env = { ...p.env, PATH: `${ctx.dir17}:${PATH}` };
  const name = (await backupDirState(p)).finished.at(-1)!;
  // psql stops at the first error (one added after the script), in one transaction.
  const before = await notes(p);
  const r = await cli(['db:backup:verify', name], { ...env, PATH: `${await fakeRestoreFailing(ctx.tmp!, ctx.dir17!)}:${env.PATH}` });
  assert.is.not(r.code, 0, r.stderr);
  assert.match(r.stderr, /did not restore/, r.stderr);
  assert.equal(await notes(p), before);
  assert.equal(
    await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%'", 'postgres'),
    [],
    'the scratch database went',
  );
});

/** 17's tools, with a psql that runs the script and then one statement that fails. */
async function fakeRestoreFailing(into: string, dir17: string): Promise<string> {
  const dir = path.join(into, 'psql-failing');
  await fs.mkdir(dir, { recursive: true });
  for (const t of TOOLS.filter((x) => x !== 'psql'))
    await fs.writeFile(path.join(dir, t), `#!/bin/sh\nexec ${dir17}/${t} "$@"\n`, { mode: 0o755 });
  await fs.writeFile(
    path.join(dir, 'psql'),
    `#!/bin/sh\n[ "$1" = --version ] && exec ${dir17}/psql --version\n{ cat; echo 'SELECT 1/0;'; } | ${dir17}/psql "$@"\n`,
    { mode: 0o755 },
  );
  return dir;
}

tools('with only client tools newer than pg-deploy knows (18), it refuses before any work, naming postgresql-client-16', async (ctx) => {
  const p = ctx.p!;
  const env = { ...p.env, PATH: `${await fakeTools(ctx.tmp!, 18)}:${PATH}` };
  const before = await backupDirState(p);
  for (const args of [['db:backup'], ['db:backup:verify']]) {
    const r = await cli(args, env);
    assert.is(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /^error: pg_dump 18 \(pg_dump on PATH\) is newer than the PostgreSQL 16 server, and pg-deploy knows the incompatibilities of newer client tools only up to 17$/m,
      `${args[0]}: ${r.stderr}`,
    );
    assert.match(r.stderr, /^hint: install postgresql-client-16 \(or set PG_BIN_DIR to a PostgreSQL 16 bin directory\)$/m);
    assert.not.match(r.stderr, /fake, never to be run/, 'no tool was run');
  }
  assert.equal(await backupDirState(p), before, 'nothing was written');
  assert.equal(await fs.readdir(p.env.DB_BACKUP_DIR).then((n) => n.filter((x) => x.startsWith('.'))), []);
  assert.equal(
    await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%'", 'postgres'),
    [],
    'no scratch database was made',
  );
});

tools.run();

// ---------------------------------------------------------------------------------------------
// A failure names the program the task runs (db:replica's pg_basebackup, not pg_dump). PATH is the
// suite's folder (only folders in it) and the install roots name only the fake tools', so nothing else is found.

const names = suite<{ tmp?: string }>('a missing or too old client program is named as the task needs it');

setUp(names, async (ctx) => {
  ctx.tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-names-'));
});

names.after(async (ctx) => {
  if (ctx.tmp) await fs.rm(ctx.tmp, { recursive: true, force: true });
});

/** findClientTools' failure for a PostgreSQL 16 server, with `tmp` for PATH and `roots` to search. */
const findFails = (tmp: string, roots: string[], program?: string) =>
  rejection(findClientTools(testCtx({ PATH: tmp }), 16, roots, program), 'it found tools');

names('with no client tools at all, pg_basebackup is the one missing, and postgresql-client-16 the fix', async (ctx) => {
  const e = await findFails(ctx.tmp!, [], 'pg_basebackup');
  assert.match(e.message, /^no pg_basebackup found for the PostgreSQL 16 server \(looked in PG_BIN_DIR, /);
  assert.match(e.hint, /^install postgresql-client-16 /);
  assert.match((await findFails(ctx.tmp!, [])).message, /^no pg_dump found for the PostgreSQL 16 server /);
});

names('with only 15 installed, pg_basebackup 15 is named as too old for the 16 server', async (ctx) => {
  const dir = await fakeTools(ctx.tmp!, 15, [...TOOLS, 'pg_basebackup']);
  const e = await findFails(ctx.tmp!, [path.join(ctx.tmp!, 'fake*')], 'pg_basebackup');
  assert.is(e.message, 'pg_basebackup 15 cannot work with a PostgreSQL 16 server: install postgresql-client-16, or set PG_BIN_DIR');
  assert.match(
    e.hint,
    new RegExp(`^pg_basebackup refuses a newer server; the newest found was ${dir}/pg_basebackup\\. Install postgresql-client-16`),
  );
});

names("the native runtime's clientBin('pg_basebackup') names pg_basebackup, never pg_dump, when none fits the server", async (ctx) => {
  // A server of a major no installed client has (99): whatever this machine has installed is too old.
  const login = { user: 'u', password: 'p' };
  const runner = nativeToolRunner(
    testCtx({ PATH: ctx.tmp! }),
    ctx.tmp!,
    async () => ({ database: 'd', admin: login, migrator: login, app: login }),
    async () => ({ query: async () => [['990000']] }),
  );
  const { message, hint } = await rejection(runner.clientBin('pg_basebackup'), 'it found a pg_basebackup for PostgreSQL 99');
  assert.match(message, /^(no pg_basebackup found|pg_basebackup \d+ cannot work with) .*PostgreSQL 99 server/);
  assert.match(hint, /postgresql-client-99/);
  assert.not.match(`${message}\n${hint}`, /pg_dump/);
});

names.run();

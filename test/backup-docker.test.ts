import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { CONTAINER_DIR_SCRIPT, CONTAINER_TOOL_SCRIPT } from '@dbkit/core/runtime/container-tools';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { cli, ok, removeProject, startProject, ROOT, type CliResult, type Project } from './setup/project.ts';
import { backupDirState, backupProject, debianBin, ownerQuery } from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';
import { assertNoSecrets, ENGINE_STUB, readCalls, type Call } from './setup/engine-stub.ts';

// What the real-engine tests (test/docker-backup.test.ts) cannot show, with a recording stub for
// `docker`: the two scripts backups send into api-db under busybox's sh, tar, mktemp and rm, as in
// the official alpine image (the local stand-in is Debian, with dash and GNU tar), and pg_dump
// failing at chosen moments behind the stream. For the calls that run a client tool in api-db, a
// wrapper around the stub does what the container would: it runs the very script the tool sent,
// with that script's secret files and socket pointing at a native server of the same major, through
// pipes on both ends as `docker compose exec` has, so the dump really streams and a failing pg_dump
// really is behind a pipe. What is asserted is the argument arrays, what reached the host files, and
// the exit codes. The script's TMPDIR is a folder the test watches, so a temporary directory left in
// the "container" is seen.

const COMPOSE_FILE = path.join(ROOT, 'infra/docker-compose.yml');
const F = ['compose', '-f', COMPOSE_FILE];
const PROBE = [
  ['compose', 'version', '--short'],
  ['info', '--format', '{{.ServerVersion}}'],
];
/** The two probes run at once: put them in PROBE's order, whatever order they reached the stub in. */
const probesInOrder = (argvs: string[][]) => {
  const key = (a: string[]) => PROBE.findIndex((p) => p.join(' ') === a.join(' '));
  return [...argvs.slice(0, 2).sort((a, b) => key(a) - key(b)), ...argvs.slice(2)];
};
const PS = [...F, 'ps', '--status', 'running', '--quiet', 'api-db'];
const TOOL = (...rest: string[]) => [...F, 'exec', '--no-TTY', 'api-db', 'sh', '-c', CONTAINER_TOOL_SCRIPT, 'db-pg-tool', ...rest];
const DIR = (...rest: string[]) => [...F, 'exec', '--no-TTY', 'api-db', 'sh', '-c', CONTAINER_DIR_SCRIPT, 'db-pg-dir', ...rest];
const ADMIN = (db: string) => [...F, 'exec', '--no-TTY', 'api-db', '/usr/local/bin/db-admin-sql', db];

interface Ctx {
  p?: Project;
  stubDir?: string;
  /** The "container's" TMPDIR. */
  containerTmp?: string;
  log?: string;
  env?: Record<string, string>;
}

const WRAPPER = `#!/bin/bash
# Records through the stub; for a client tool in api-db, then runs the tool's script as the container would.
set -o pipefail
case " $* " in
  *" db-pg-tool "*|*" db-pg-dir "*)
    "$STUB_NODE" "$STUB_JS" docker "$@" </dev/null >/dev/null || exit $?
    while [ "$1" != api-db ]; do shift; done
    shift
    export SCRIPTS_DIR="$EMU_SCRIPTS_DIR" SECRETS_DIR="$EMU_SECRETS_DIR" PGHOST="$EMU_PGHOST" PGPORT="$EMU_PGPORT" TMPDIR="$EMU_TMPDIR" PATH="$EMU_BUSYBOX:\${EMU_FAKE_BIN:+$EMU_FAKE_BIN:}$EMU_BIN:$PATH"
    if [ "$5" = pg_restore ] || [ "$5" = restore ]; then cat | "$@" | cat; else "$@" </dev/null | cat; fi
    exit $?
    ;;
  *) exec "$STUB_NODE" "$STUB_JS" docker "$@" ;;
esac
`;

async function run(ctx: Ctx, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  await fs.writeFile(ctx.log!, '');
  return cli(args, { ...ctx.p!.env, ...ctx.env!, DB_RUNTIME: 'docker', ...env });
}

/**
 * A pg_dump that writes a plausible start of a directory dump (a toc.dat starting PGDMP) and then
 * fails, as one cut off mid-dump would: if anything hid its exit status, that would become a backup.
 */
const FAILING_PG_DUMP = `#!/bin/sh
for a in "$@"; do case "$a" in --file=*) d="\${a#--file=}" ;; esac; done
mkdir -p "$d" && printf PGDMP > "$d/toc.dat"
echo 'pg_dump: error: Dumping the contents of table "accounts" failed: server closed the connection unexpectedly' >&2
exit 1
`;

/** The argument arrays with the random parts (snapshot id, scratch database) named. */
function shapes(cs: Call[]): string[][] {
  return probesInOrder(cs.map((c) => c.argv)).map((argv) =>
    argv.map((a) =>
      a.replace(/^--snapshot=.+$/, '--snapshot=ID').replace(/^(--dbname=)?pgdeploy_(verify|restore)_(\d+_)?[0-9a-f]{8}$/, '$1SCRATCH'),
    ),
  );
}

const docker = suite<Ctx>('the docker runtime dumps and restores inside api-db and streams through the host');

setUp(docker, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p);
  await ok(['db:migrate'], ctx.p.env);
  await ownerQuery(ctx.p, "INSERT INTO accounts (email) SELECT 'd' || i || '@example.com' FROM generate_series(1, 250) i");
  ctx.stubDir = await fs.mkdtemp(path.join(os.tmpdir(), 'docker-stub-'));
  ctx.log = path.join(ctx.stubDir, 'calls.jsonl');
  await fs.writeFile(path.join(ctx.stubDir, 'docker'), WRAPPER, { mode: 0o755 });
  const busybox = path.join(ctx.stubDir, 'busybox');
  await fs.mkdir(busybox);
  const bb = execFileSync('sh', ['-c', 'command -v busybox']).toString().trim(); // apt-get install busybox
  for (const applet of ['sh', 'tar', 'mktemp', 'rm', 'cat']) await fs.symlink(bb, path.join(busybox, applet));
  ctx.containerTmp = path.join(ctx.stubDir, 'container-tmp');
  await fs.mkdir(ctx.containerTmp);
  const socket = nativePaths(ctx.p.nativeDir).run;
  ctx.env = {
    PATH: `${ctx.stubDir}:${process.env.PATH}`,
    DOCKER_STUB_LOG: ctx.log,
    DOCKER_STUB_SECRETS_DIR: ctx.p.secretsDir,
    DOCKER_STUB_PGHOST: socket,
    DOCKER_STUB_PGPORT: String(ctx.p.port),
    STUB_NODE: process.execPath,
    STUB_JS: ENGINE_STUB,
    EMU_SECRETS_DIR: ctx.p.secretsDir,
    EMU_SCRIPTS_DIR: path.join(ROOT, 'database/infra/scripts'), // db-secrets.sh, mounted in api-db at /usr/local/bin
    EMU_PGHOST: socket,
    EMU_PGPORT: String(ctx.p.port),
    EMU_BIN: debianBin(),
    EMU_BUSYBOX: busybox,
    EMU_TMPDIR: ctx.containerTmp,
  };
});

docker.after(async (ctx) => {
  await removeProject(ctx.p);
  if (ctx.stubDir) await fs.rm(ctx.stubDir, { recursive: true, force: true });
});

docker('db:backup runs pg_dump and pg_dumpall in api-db with the superuser read there, and nothing secret crosses docker', async (ctx) => {
  const r = await run(ctx, ['db:backup', '--json']);
  assert.is(r.code, 0, r.stderr);
  const cs = await readCalls(ctx.log!);
  const got = shapes(cs);
  assert.equal(got.slice(0, 3), [...PROBE, PS]);
  // pg_dump and pg_dumpall run side by side, so their order is not fixed.
  assert.equal(
    got.slice(3).sort(),
    [
      TOOL('pg_dump', '--format=custom', '--no-password', '--snapshot=ID', 'app'),
      TOOL('pg_dumpall', '--roles-only', '--no-password', '--no-role-passwords'),
    ].sort(),
  );
  await assertNoSecrets(ctx.p!, cs);
  const name = JSON.parse(r.stdout).name as string;
  const dir = path.join(ctx.p!.env.DB_BACKUP_DIR, name);
  const manifest = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8'));
  assert.is(manifest.runtime, 'docker');
  assert.is(manifest.data['table public.accounts'], '250');
  assert.is((await fs.readFile(path.join(dir, 'db.dump'))).subarray(0, 5).toString('latin1'), 'PGDMP', 'the stream reached the host file');
  assert.match(await fs.readFile(path.join(dir, 'roles.sql'), 'utf8'), /CREATE ROLE/);
});

docker('db:backup:verify restores the streamed dump into a scratch database in api-db and drops it', async (ctx) => {
  const r = await run(ctx, ['db:backup:verify']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /verified app-.*: \d+ tables, \d+ rows, schema identical/);
  const cs = await readCalls(ctx.log!);
  assert.equal(shapes(cs), [
    ...PROBE,
    PS,
    ADMIN('postgres'),
    ADMIN('postgres'),
    TOOL('pg_restore', '--exit-on-error', '--single-transaction', '--no-password', '--dbname=SCRATCH'),
    ADMIN('SCRATCH'),
    ADMIN('SCRATCH'),
    ADMIN('postgres'),
  ]);
  // First the scratch databases interrupted runs left are listed (none here), then the new one is made, named with this pid.
  assert.match(cs[3].stdin, /FROM pg_database d WHERE d\.datname ~ '\^pgdeploy_\(verify\|restore\|replaced\)_'/);
  assert.match(cs[4].stdin, /^CREATE DATABASE "pgdeploy_verify_\d+_[0-9a-f]{8}"/);
  assert.match(cs[8].stdin, /^DROP DATABASE IF EXISTS "pgdeploy_verify_\d+_[0-9a-f]{8}" WITH \(FORCE\)/);
  await assertNoSecrets(ctx.p!, cs);
});

/** db:backup ARGS with a superuser password the server does not know: pg_dump fails inside api-db. */
async function backupWithWrongPassword(ctx: Ctx, args: string[]): Promise<void> {
  const p = ctx.p!;
  const before = await backupDirState(p);
  const file = path.join(p.secretsDir, 'postgres_password');
  const real = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, 'wrong-in-the-container-0123456789', { mode: 0o600 });
  try {
    const r = await run(ctx, ['db:backup', ...args]);
    failsClearly(r, /pg_dump(all --roles-only)? failed \(exit 1\): .*password authentication failed/, { hint: /postgres_password/ });
  } finally {
    await fs.writeFile(file, real, { mode: 0o600 });
  }
  assert.equal(await backupDirState(p), before, 'nothing new, finished or partial');
}

docker('a pg_dump that fails inside the container is caught behind the stream: non-zero, the reason, no backup', async (ctx) => {
  await backupWithWrongPassword(ctx, []);
});

docker('db:restore restores through api-db after a safety backup, and the data is back', async (ctx) => {
  const p = ctx.p!;
  await ownerQuery(p, 'DELETE FROM accounts');
  const r = await run(ctx, ['db:restore', '--yes']);
  assert.is(r.code, 0, r.stderr);
  const got = shapes(await readCalls(ctx.log!));
  assert.ok(
    got.some(
      (a) => a.join(' ') === TOOL('pg_restore', '--exit-on-error', '--single-transaction', '--no-password', '--dbname=SCRATCH').join(' '),
    ),
    'pg_restore ran in api-db',
  );
  assert.ok(
    got.some((a) => a.includes('pg_dump')),
    'the safety backup ran pg_dump in api-db first',
  );
  const n = await ownerQuery(p, 'SELECT count(*)::int AS n FROM accounts');
  assert.is(n[0].n, 250);
  assert.ok((await backupDirState(p)).finished.some((b) => b.endsWith('-before-restore')));
});

docker(
  'db:backup --format dir --jobs 2: pg_dump -Fd runs in api-db, the directory comes out as a tar, arrives unpacked, and no tar or temporary directory is left',
  async (ctx) => {
    const r = await run(ctx, ['db:backup', '--format', 'dir', '--jobs', '2', '--json']);
    assert.is(r.code, 0, r.stderr);
    const cs = await readCalls(ctx.log!);
    assert.equal(
      shapes(cs).slice(3).sort(),
      [
        DIR('dump', 'pg_dump', '--format=directory', '--jobs=2', '--no-password', '--snapshot=ID', 'app'),
        TOOL('pg_dumpall', '--roles-only', '--no-password', '--no-role-passwords'),
      ].sort(),
    );
    await assertNoSecrets(ctx.p!, cs);
    const dir = path.join(ctx.p!.env.DB_BACKUP_DIR, JSON.parse(r.stdout).name);
    assert.equal((await fs.readdir(dir)).sort(), ['db.dir', 'db.dir.sha256', 'manifest.json', 'roles.sql'], 'the tar was removed');
    assert.is((await fs.readFile(path.join(dir, 'db.dir/toc.dat'))).subarray(0, 5).toString('latin1'), 'PGDMP');
    execFileSync('sha256sum', ['--check', '--status', 'db.dir.sha256'], { cwd: dir });
    for (const f of await fs.readdir(path.join(dir, 'db.dir'))) {
      const st = await fs.stat(path.join(dir, 'db.dir', f));
      assert.is(st.mode & 0o777, 0o600, f);
      assert.is(st.uid, process.getuid!(), `${f} belongs to the user running the tool`);
    }
    const manifest = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8'));
    assert.is(manifest.dump.kind, 'dir');
    assert.is(manifest.data['table public.accounts'], '250');
    assert.equal(await fs.readdir(ctx.containerTmp!), [], 'the container removed its temporary directory');
  },
);

docker(
  'db:backup:verify sends the directory into api-db as a tar for pg_restore --jobs 2, without --single-transaction; --jobs 1 keeps it',
  async (ctx) => {
    const r = await run(ctx, ['db:backup:verify']);
    assert.is(r.code, 0, r.stderr);
    const cs = await readCalls(ctx.log!);
    assert.equal(shapes(cs).slice(5, 6), [
      DIR('restore', 'pg_restore', '--exit-on-error', '--jobs=2', '--no-password', '--dbname=SCRATCH'),
    ]);
    await assertNoSecrets(ctx.p!, cs);
    const one = await run(ctx, ['db:backup:verify', '--jobs', '1']);
    assert.is(one.code, 0, one.stderr);
    assert.equal(shapes(await readCalls(ctx.log!)).slice(5, 6), [
      DIR('restore', 'pg_restore', '--exit-on-error', '--single-transaction', '--no-password', '--dbname=SCRATCH'),
    ]);
    assert.equal(
      (await fs.readdir(ctx.p!.env.DB_BACKUP_DIR)).filter((n) => n.startsWith('.')),
      [],
      'no staged tar is left',
    );
    assert.equal(await fs.readdir(ctx.containerTmp!), []);
  },
);

docker('a dir-format pg_dump failing inside the container: non-zero, the reason, no backup, no temporary directory left', async (ctx) => {
  await backupWithWrongPassword(ctx, ['--format', 'dir', '--jobs', '2']);
  assert.equal(await fs.readdir(ctx.containerTmp!), []);
});

docker('a pg_dump -Fd that fails after writing part of its directory is not hidden by the tar that follows it', async (ctx) => {
  const p = ctx.p!;
  const before = await backupDirState(p);
  const fake = path.join(ctx.stubDir!, 'failing-bin');
  await fs.mkdir(fake, { recursive: true });
  await fs.writeFile(path.join(fake, 'pg_dump'), FAILING_PG_DUMP, { mode: 0o755 });
  const r = await run(ctx, ['db:backup', '--format', 'dir', '--jobs', '2'], { EMU_FAKE_BIN: fake });
  failsClearly(r, /^error: pg_dump failed \(exit 1\): .*server closed the connection unexpectedly$/);
  assert.equal(await backupDirState(p), before, 'nothing new, finished or partial');
  assert.equal(await fs.readdir(ctx.containerTmp!), []);
});

docker('db:restore of a dir backup through api-db brings the data back', async (ctx) => {
  const p = ctx.p!;
  await ownerQuery(p, 'DELETE FROM accounts');
  const r = await run(ctx, ['db:restore', '--yes', '--no-backup']);
  assert.is(r.code, 0, r.stderr);
  const got = shapes(await readCalls(ctx.log!));
  assert.ok(
    got.some(
      (a) => a.join(' ') === DIR('restore', 'pg_restore', '--exit-on-error', '--jobs=2', '--no-password', '--dbname=SCRATCH').join(' '),
    ),
    'pg_restore -j 2 ran in api-db',
  );
  const n = await ownerQuery(p, 'SELECT count(*)::int AS n FROM accounts');
  assert.is(n[0].n, 250);
  assert.equal(await fs.readdir(ctx.containerTmp!), []);
});

docker('both container scripts pass shellcheck as POSIX sh', async () => {
  for (const script of [CONTAINER_TOOL_SCRIPT, CONTAINER_DIR_SCRIPT]) {
    execFileSync('shellcheck', ['--shell=sh', '-'], { input: script });
  }
});

docker.run();

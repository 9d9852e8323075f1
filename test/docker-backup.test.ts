import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { withClient } from '@dbkit/core/pg';
import { appTarget, readSecretFile } from './setup/project.ts';
import {
  cli,
  dbShell,
  engineSuite,
  makeDockerProject,
  ok,
  removeDockerProject,
  startDockerProject,
  type DockerProject,
} from './setup/docker.ts';
import { backupDirState, ownerQuery } from './setup/backup.ts';
import { setUp } from './setup/hooks.ts';

// Backups through the real api-db container: pg_dump, pg_dumpall and pg_restore run inside it (its
// tools match its server), the dump streams (custom) or travels as a tar (directory format) to the
// host. Tables are made and filled by the schema owner, over verify-full TLS from the host.

interface Ctx {
  p?: DockerProject;
  /** Count and digest of every table, taken before anything was deleted. */
  before?: Snapshot;
  custom?: string;
  dir?: string;
  /** What the container's temporary directory held before the directory-format backup. */
  containerTmp?: string;
}

type Snapshot = Record<string, { n: number; sum: string }>;

const TABLES = ['accounts', 'orders', 'notes'];

/** Row count and content digest of each table, and the sequence, as the application role reads them. */
async function snapshot(p: DockerProject): Promise<Snapshot> {
  return withClient(await appTarget(p), async (c) => {
    const s: Snapshot = {};
    for (const t of TABLES) {
      s[t] = (
        await c.query(`SELECT count(*)::int AS n, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS sum FROM ${t} x`)
      ).rows[0];
    }
    const seq = (await c.query('SELECT last_value, is_called FROM invoice_no')).rows[0];
    s.invoice_no = { n: Number(seq.last_value), sum: String(seq.is_called) };
    return s;
  });
}

const mode = async (f: string) => (await fs.stat(f)).mode & 0o777;

/** Every file under `dir` is 0600 and every directory (`dir` included) 0700. */
async function assertPrivate(dir: string): Promise<number> {
  assert.is(await mode(dir), 0o700, `${dir} is 0700`);
  let files = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const f = path.join(dir, e.name);
    if (e.isDirectory()) files += await assertPrivate(f);
    else {
      assert.is(await mode(f), 0o600, `${f} is 0600`);
      files++;
    }
  }
  return files;
}

/** The container's temporary directory, as its scripts' mktemp sees it. */
const containerTmp = (p: DockerProject) => dbShell(p, 'ls -A "${TMPDIR:-/tmp}"');

const scratchDatabases = async (p: DockerProject) =>
  (await ownerQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%' ORDER BY 1")).map((r) => r.datname);

// ---------------------------------------------------------------------------------------------
const backups = engineSuite<Ctx>('backups through the api-db container verify and restore');

if (backups) {
  setUp(backups, async (ctx) => {
    ctx.p = await makeDockerProject();
    await startDockerProject(ctx.p, { migrate: true });
    await ownerQuery(
      ctx.p,
      `
      CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts(id), total numeric(10,2) NOT NULL);
      CREATE TABLE notes (id serial PRIMARY KEY, body text);
      CREATE SEQUENCE invoice_no START 1000;
      INSERT INTO accounts (email) SELECT 'b' || i || '@example.com' FROM generate_series(1, 400) i;
      INSERT INTO orders (account_id, total) SELECT 1 + (i % 400), (i % 97) + 0.25 FROM generate_series(1, 3000) i;
      INSERT INTO notes (body) VALUES ('tab	and newline
inside'), (NULL), ('quote '' and backslash \\');
      SELECT nextval('invoice_no') FROM generate_series(1, 17);`,
    );
    ctx.before = await snapshot(ctx.p);
    assert.is(ctx.before.orders.n, 3000);
  });

  backups.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });

  backups('db:backup --verify takes a custom-format backup through the container, and db:backup:verify passes it', async (ctx) => {
    const p = ctx.p!;
    const r = await ok(['db:backup', '--verify', '--json'], p.env);
    const out = JSON.parse(r.stdout);
    assert.is(out.format, 'custom');
    assert.is(out.verified, true);
    ctx.custom = out.name;
    const dir = path.join(p.env.DB_BACKUP_DIR, out.name);
    const head = (await fs.readFile(path.join(dir, 'db.dump'))).subarray(0, 5).toString('latin1');
    assert.is(head, 'PGDMP', 'a custom-format dump');
    execFileSync('sha256sum', ['--check', '--status', 'db.dump.sha256'], { cwd: dir });
    const manifest = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8'));
    assert.is(manifest.data['table public.orders'], '3000');
    const v = await ok(['db:backup:verify', out.name], p.env);
    assert.match(v.stdout, new RegExp(`^verified ${out.name}: \\d+ tables, \\d+ rows, schema identical$`, 'm'));
    assert.equal(await scratchDatabases(p), [], 'no scratch database is left');
  });

  backups('the backup is 0600 files in 0700 directories, and roles.sql holds no password without --with-passwords', async (ctx) => {
    const p = ctx.p!;
    assert.is(await mode(p.env.DB_BACKUP_DIR), 0o700, 'the backup folder is 0700');
    const dir = path.join(p.env.DB_BACKUP_DIR, ctx.custom!);
    assert.is(await assertPrivate(dir), 4, 'db.dump, db.dump.sha256, roles.sql, manifest.json');
    const roles = await fs.readFile(path.join(dir, 'roles.sql'), 'utf8');
    for (const login of ['migrate_user', 'app_user'])
      assert.match(roles, new RegExp(`CREATE ROLE ${await readSecretFile(p, login)};`), `${login} is in roles.sql`);
    assert.not.match(roles, /SCRAM-SHA-256|PASSWORD/i, 'no password verifier');
    for (const n of ['postgres_password', 'migrate_password', 'app_password']) {
      assert.not.ok(roles.includes(await readSecretFile(p, n)), `no ${n}`);
    }
    // The same check finds them where they were asked for.
    const w = JSON.parse((await ok(['db:backup', '--with-passwords', '--json'], p.env)).stdout);
    const withPasswords = await fs.readFile(path.join(p.env.DB_BACKUP_DIR, w.name, 'roles.sql'), 'utf8');
    assert.match(withPasswords, /PASSWORD 'SCRAM-SHA-256\$/);
    await assertPrivate(path.join(p.env.DB_BACKUP_DIR, w.name));
  });

  backups('db:restore --yes --no-backup brings back rows deleted after the backup', async (ctx) => {
    const p = ctx.p!;
    await ownerQuery(
      p,
      "DELETE FROM orders WHERE id % 3 = 0; DELETE FROM notes; UPDATE accounts SET email = 'changed-' || email WHERE id < 50",
    );
    assert.is((await snapshot(p)).orders.n, 2000, 'rows were deleted');
    const before = await backupDirState(p);
    const r = await ok(['db:restore', ctx.custom!, '--yes', '--no-backup'], p.env);
    assert.match(r.stdout, new RegExp(`^restored ${ctx.custom} as app in \\d+ ms`, 'm'));
    assert.equal(await snapshot(p), ctx.before, 'every table as it was at the backup');
    assert.equal((await backupDirState(p)).finished, before.finished, '--no-backup took no safety backup');
    assert.equal(await scratchDatabases(p), [], 'no scratch or replaced database is left');
  });

  backups('db:backup --format dir --jobs 2 --verify writes a private directory-format backup through the container', async (ctx) => {
    const p = ctx.p!;
    ctx.containerTmp = await containerTmp(p);
    const r = await ok(['db:backup', '--format', 'dir', '--jobs', '2', '--verify', '--json'], p.env);
    const out = JSON.parse(r.stdout);
    assert.is(out.format, 'dir');
    assert.is(out.jobs, 2);
    assert.is(out.verified, true);
    ctx.dir = out.name;
    const dir = path.join(p.env.DB_BACKUP_DIR, out.name);
    const toc = (await fs.readFile(path.join(dir, 'db.dir', 'toc.dat'))).subarray(0, 5).toString('latin1');
    assert.is(toc, 'PGDMP', 'a directory-format dump');
    execFileSync('sha256sum', ['--check', '--status', 'db.dir.sha256'], { cwd: dir });
    const files = await assertPrivate(dir);
    assert.ok(files > 5, `a file per table beside toc.dat (${files} files)`);
    assert.equal((await backupDirState(p)).other, [], 'no tar or hidden leftover on the host');
    assert.is(await containerTmp(p), ctx.containerTmp, 'no temporary directory left in the container');
  });

  backups('db:restore --yes --no-backup --jobs 2 of the directory-format backup brings back deleted rows', async (ctx) => {
    const p = ctx.p!;
    await ownerQuery(
      p,
      'DELETE FROM orders WHERE id > 100; DELETE FROM accounts WHERE id > 300 AND id NOT IN (SELECT account_id FROM orders)',
    );
    assert.is((await snapshot(p)).orders.n, 100, 'rows were deleted');
    const r = await ok(['db:restore', ctx.dir!, '--yes', '--no-backup', '--jobs', '2'], p.env);
    assert.match(r.stdout, new RegExp(`^restored ${ctx.dir} as app in \\d+ ms`, 'm'));
    assert.equal(await snapshot(p), ctx.before, 'every table as it was at the backup');
    assert.equal((await backupDirState(p)).other, [], 'no staged tar is left in the backup folder');
    assert.is(await containerTmp(p), ctx.containerTmp, 'no temporary directory left in the container');
    assert.equal(await scratchDatabases(p), []);
    const r2 = await cli(['db:status'], p.env);
    assert.is(r2.code, 0, r2.stderr);
  });

  backups.run();
}

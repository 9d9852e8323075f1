import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { withClient } from '@dbkit/core/pg';
import { appTarget, cli, ok, removeProject, startProject, type Project } from './setup/project.ts';
import {
  backupDirState,
  backupProject,
  cliAs,
  debianMajor,
  fillShop,
  flipByte,
  nothingLeft,
  ownerQuery,
  shopSnapshot,
  suQuery,
} from './setup/backup.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

interface Ctx {
  p?: Project;
}

// ---------------------------------------------------------------------------------------------
const roundTrip = suite<Ctx & { before?: Awaited<ReturnType<typeof shopSnapshot>>; backup?: string }>(
  'a backup restores the database it was taken from',
);

setUp(roundTrip, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p);
  await ok(['db:migrate'], ctx.p.env);
  await fillShop(ctx.p);
  ctx.before = await shopSnapshot(ctx.p);
});

roundTrip.after(async (ctx) => {
  await removeProject(ctx.p);
});

roundTrip('db:backup --verify writes a custom-format dump, its checksum, the roles and a manifest, all private', async (ctx) => {
  const p = ctx.p!;
  const r = await ok(['db:backup', '--verify', '--json'], p.env);
  const out = JSON.parse(r.stdout);
  assert.is(out.verified, true);
  ctx.backup = out.name;
  assert.match(out.name, /^app-\d{8}T\d{6}Z-v1$/, 'named with the UTC time and the migration version');
  const dir = path.join(p.env.DB_BACKUP_DIR, out.name);
  const head = (await fs.readFile(path.join(dir, 'db.dump'))).subarray(0, 5).toString('latin1');
  assert.is(head, 'PGDMP');
  // sha256sum itself agrees with the checksum file.
  execFileSync('sha256sum', ['--check', '--status', 'db.dump.sha256'], { cwd: dir });
  const roles = await fs.readFile(path.join(dir, 'roles.sql'), 'utf8');
  assert.match(roles, /CREATE ROLE reporting;/);
  assert.not.match(roles, /SCRAM-SHA-256|PASSWORD/i, 'no password verifiers without --with-passwords');
  for (const f of ['db.dump', 'db.dump.sha256', 'roles.sql', 'manifest.json']) {
    assert.is((await fs.stat(path.join(dir, f))).mode & 0o077, 0, `${f} is private`);
  }
  assert.is((await fs.stat(dir)).mode & 0o077, 0, 'the backup directory is private');
  const manifest = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8'));
  assert.is(manifest.data['table public.order_lines'], '5000');
  assert.is(manifest.data['sequence public.invoice_no'], '1041');
  assert.ok(manifest.verified?.at, 'marked verified');
});

roundTrip(
  'after the whole cluster is deleted, db:restore brings back rows, sequence, function, schema and role, and the app logs in',
  async (ctx) => {
    const p = ctx.p!;
    await ok(['db:delete', '--yes'], p.env); // also takes a safety backup (unverified, so not the default)
    await ok(['db:up'], p.env);
    const gone = await suQuery(p, "SELECT count(*)::int AS n FROM pg_roles WHERE rolname = 'reporting'");
    assert.is(gone[0].n, 0, 'the role went with the cluster');
    const r = await ok(['db:restore', '--yes', '--no-backup'], p.env);
    assert.match(r.stdout, new RegExp(`restored ${ctx.backup} as app`), 'the newest verified backup is the default');
    const after = await shopSnapshot(p);
    assert.equal(after.data, ctx.before!.data);
    assert.is(after.schema, ctx.before!.schema, 'pg_dump --schema-only is identical');
    const granted = await suQuery(p, "SELECT has_table_privilege('reporting', 'public.orders', 'SELECT') AS ok");
    assert.is(granted[0].ok, true);
    const rows = await withClient(await appTarget(p), async (c) => (await c.query('SELECT count(*)::int AS n FROM order_lines')).rows[0].n);
    assert.is(rows, 5000, 'the application role logs in with its usual secret and reads');
  },
);

roundTrip('db:restore replaces changed data and keeps a safety backup of what it replaced', async (ctx) => {
  const p = ctx.p!;
  await ownerQuery(p, 'DELETE FROM order_lines');
  const before = (await backupDirState(p)).finished.length;
  await ok(['db:restore', ctx.backup!, '--yes'], p.env);
  const state = await backupDirState(p);
  assert.is(state.finished.length, before + 1);
  assert.ok(
    state.finished.some((n) => n.endsWith('-before-restore')),
    state.finished.join(', '),
  );
  assert.equal((await shopSnapshot(p)).data, ctx.before!.data);
});

roundTrip('a flipped byte fails verification and db:restore refuses the backup, changing nothing', async (ctx) => {
  const p = ctx.p!;
  await ownerQuery(p, "INSERT INTO notes (body) VALUES ('after the backup')");
  const dump = path.join(p.env.DB_BACKUP_DIR, ctx.backup!, 'db.dump');
  await flipByte(dump);
  failsClearly(await cli(['db:backup:verify', ctx.backup!], p.env), /damaged: db\.dump does not match its checksum/, {
    hint: /another backup/,
  });
  failsClearly(await cli(['db:restore', ctx.backup!, '--yes', '--no-backup'], p.env), /damaged/);
  const notes = await ownerQuery(p, "SELECT count(*)::int AS n FROM notes WHERE body = 'after the backup'");
  assert.is(notes[0].n, 1, 'the database was not touched');
  const leftovers = await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%'");
  assert.equal(leftovers, [], 'no scratch or half-restored database is left');
});

roundTrip.run();

// ---------------------------------------------------------------------------------------------
const failures = suite<Ctx>('a failed backup exits non-zero and leaves nothing that looks like a backup');

setUp(failures, async (ctx) => {
  ctx.p = await backupProject();
  await startProject(ctx.p);
  await ok(['db:migrate'], ctx.p.env);
});

failures.after(async (ctx) => {
  await removeProject(ctx.p);
});

failures('a stopped server: one error line naming the fix', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:down'], p.env);
  try {
    failsClearly(await cli(['db:backup'], p.env), /not running/, { hint: /db:up/ });
    await nothingLeft(p);
  } finally {
    await ok(['db:up'], p.env);
  }
});

failures('a wrong superuser password: the error names the secret file, and prints no password', async (ctx) => {
  const p = ctx.p!;
  const file = path.join(p.secretsDir, 'postgres_password');
  const real = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, 'not-the-password-1234567890', { mode: 0o600 });
  try {
    const r = await cli(['db:backup'], p.env);
    failsClearly(r, /postgres_password/);
    assert.not.ok((r.stdout + r.stderr).includes('not-the-password-1234567890'), 'the password is not printed');
    await nothingLeft(p);
  } finally {
    await fs.writeFile(file, real, { mode: 0o600 });
  }
});

failures('a backup directory this user cannot write: one error line, nothing written', async (ctx) => {
  const p = ctx.p!;
  const dir = path.join(p.dir, 'readonly-backups');
  await fs.mkdir(dir, { mode: 0o755 });
  const env = { ...p.env, DB_BACKUP_DIR: dir };
  let r;
  if (process.getuid?.() === 0) {
    // Root writes anywhere; the unprivileged server user meets the permission bits, so the task runs
    // as that user, with the secrets it needs handed over to it.
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    await fs.chown(p.secretsDir, uid, gid);
    for (const f of await fs.readdir(p.secretsDir)) await fs.chown(path.join(p.secretsDir, f), uid, gid);
    r = await cliAs(uid, gid, ['db:backup'], env);
  } else {
    await fs.chmod(dir, 0o555);
    r = await cli(['db:backup'], env);
  }
  failsClearly(r, /cannot write backups to .*readonly-backups: EACCES/, { hint: /DB_BACKUP_DIR/ });
  assert.equal(await fs.readdir(dir), []);
});

failures('after those failures a backup succeeds, and the previous ones were never pruned by a failure', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:backup'], p.env);
  const s = await backupDirState(p);
  assert.is(s.finished.length, 1);
  assert.equal(s.other, []);
});

failures(
  'db:status shows the server, the environment, the size, the last backup and whether it is verified, and the certificate',
  async (ctx) => {
    const p = ctx.p!;
    const j = JSON.parse((await ok(['db:status', '--json'], p.env)).stdout);
    const o = j.overview;
    assert.is(o.server.up, true);
    assert.ok(Date.parse(o.server.since) <= Date.now());
    assert.is(o.environment, 'development');
    assert.ok(o.database.bytes > 1e6 && o.database.connections >= 1, JSON.stringify(o.database));
    assert.is(o.lastBackup.name, (await backupDirState(p)).finished[0]);
    assert.is(o.lastBackup.verified, false);
    assert.is(o.lastVerifiedBackup, undefined);
    assert.ok(Date.parse(o.certificate.notAfter) > Date.now());
    const text = (await ok(['db:status'], p.env)).stdout;
    assert.match(text, /^backup\s+app-\S+, \d+ min ago, NOT verified$/m);
  },
);

failures('db:status with the server down says so, still shows the backups, and --exit-code fails', async (ctx) => {
  const p = ctx.p!;
  await ok(['db:down'], p.env);
  try {
    const r = await ok(['db:status'], p.env);
    assert.match(r.stdout, /^server\s+DOWN/m);
    assert.match(r.stdout, /^backup\s+app-/m);
    assert.is((await cli(['db:status', '--exit-code'], p.env)).code, 1);
  } finally {
    await ok(['db:up'], p.env);
  }
});

failures.run();

// ---------------------------------------------------------------------------------------------
const embedded = suite<Ctx>('the embedded PostgreSQL 16 server and the client tools found on this machine');

setUp(embedded, async (ctx) => {
  ctx.p = await backupProject({ embedded: true });
  await startProject(ctx.p);
});

embedded.after(async (ctx) => {
  await removeProject(ctx.p);
});

embedded('client tools older than the server are refused with the version to install; newer ones dump it', async (ctx) => {
  const p = ctx.p!;
  const client = debianMajor();
  const r = await cli(['db:backup'], p.env);
  if (client < 16) {
    failsClearly(
      r,
      new RegExp(`^error: pg_dump ${client} cannot dump a PostgreSQL 16 server: install postgresql-client-16, or set PG_BIN_DIR$`),
      { hint: /postgresql-client-16/ },
    );
    const s = await backupDirState(p);
    assert.equal([...s.finished, ...s.other], []);
  } else {
    assert.is(r.code, 0, r.stderr);
  }
});

embedded.run();

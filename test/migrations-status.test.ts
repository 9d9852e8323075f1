import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { cli, readSecretFile, withStartedProject, type Project } from './setup/project.ts';
import { output, query } from './setup/engine.ts';

const files: Record<string, string> = {
  '000001_accounts.up.sql': 'CREATE TABLE accounts (id int PRIMARY KEY);\n',
  '000001_accounts.down.sql': 'DROP TABLE accounts;\n',
  '000003_orders.up.sql': 'CREATE TABLE orders (id int PRIMARY KEY);\n',
  '000003_orders.down.sql': 'DROP TABLE orders;\n',
};

interface Ctx {
  p?: Project;
}

const status = suite<Ctx>('db:status and the history table', {});

withStartedProject(status, { migrations: files, migrate: ['up', '1'] });

status('--json prints one parseable object: version, dirty, applied and pending files with their names', async (ctx) => {
  const r = await cli(['db:status', '--json'], ctx.p!.env);
  assert.is(r.code, 0, output(r));
  const s = JSON.parse(r.stdout);
  assert.is(s.version, 1);
  assert.is(s.dirty, false);
  assert.equal(
    s.applied.map((e: { version: number; name: string; file: string }) => [e.version, e.name, e.file]),
    [[1, 'accounts', '000001_accounts.up.sql']],
  );
  assert.ok(!Number.isNaN(Date.parse(s.applied[0].appliedAt)));
  assert.equal(
    s.pending.map((e: { version: number; name: string }) => [e.version, e.name]),
    [[3, 'orders']],
  );
});

status('--exit-code exits 1 while a migration is pending and 0 once none is', async (ctx) => {
  assert.is((await cli(['db:status', '--exit-code'], ctx.p!.env)).code, 1);
  assert.is((await cli(['db:status'], ctx.p!.env)).code, 0);
  assert.is((await cli(['db:migrate'], ctx.p!.env)).code, 0);
  const r = await cli(['db:status', '--exit-code'], ctx.p!.env);
  assert.is(r.code, 0, output(r));
  assert.match(r.stdout, /^pending\s+0$/m);
});

status("the history holds each applied file's name, checksum, time, duration and role", async (ctx) => {
  const p = ctx.p!;
  const rows = await query(
    p,
    'SELECT version, name, checksum, applied_at, duration_ms, applied_by FROM schema_migrations_history ORDER BY version',
  );
  const sha = (f: string) => createHash('sha256').update(files[f]).digest('hex');
  assert.equal(
    rows.map((r) => [Number(r.version), r.name, r.checksum]),
    [
      [1, 'accounts', sha('000001_accounts.up.sql')],
      [3, 'orders', sha('000003_orders.up.sql')],
    ],
  );
  const role = await readSecretFile(p, 'migrate_user');
  for (const r of rows) {
    assert.instance(r.applied_at, Date);
    const recorded = Number(r.duration_ms); // a column check: the history records a non-negative whole number
    assert.ok(Number.isInteger(recorded) && recorded >= 0);
    assert.is(r.applied_by, role);
  }
});

status('warns on stderr when an applied file was edited afterwards, and marks it in --json', async (ctx) => {
  const p = ctx.p!;
  await fs.appendFile(path.join(p.migrationsDir, '000001_accounts.up.sql'), '-- tidied up later\n');
  const r = await cli(['db:status'], p.env);
  assert.is(r.code, 0, output(r));
  assert.match(r.stderr, /warning: 000001_accounts\.up\.sql was edited after it was applied/);
  assert.not.match(r.stderr, /000003_orders\.up\.sql was edited/);
  const j = JSON.parse((await cli(['db:status', '--json'], p.env)).stdout);
  assert.equal(
    j.applied.map((e: { edited: boolean }) => e.edited),
    [true, false],
  );
});

status('flags a file added below the current version, which no runner would ever apply', async (ctx) => {
  const p = ctx.p!;
  await fs.writeFile(path.join(p.migrationsDir, '000002_late.up.sql'), 'CREATE TABLE late (id int);\n');
  await fs.writeFile(path.join(p.migrationsDir, '000002_late.down.sql'), 'DROP TABLE late;\n');
  const r = await cli(['db:status', '--exit-code'], p.env);
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /warning: 000002_late\.up\.sql is below the current version 3 but was never applied/);
  const j = JSON.parse((await cli(['db:status', '--json'], p.env)).stdout);
  assert.equal(
    j.applied.map((e: { version: number; unrecorded?: boolean }) => [e.version, Boolean(e.unrecorded)]),
    [
      [1, false],
      [2, true],
      [3, false],
    ],
  );
  assert.is((await cli(['db:migrate'], p.env)).stdout.trim(), 'no change');
});

status.run();

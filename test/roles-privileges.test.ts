import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { connect, withClient } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { appTarget, cli, ok, ownerTarget, readSecretFile, run, withStartedProject, type Project } from './setup/project.ts';
import { superuser } from './setup/backup.ts';
import { output, query, versionRows } from './setup/engine.ts';

interface Ctx {
  p?: Project;
}

const roles = suite<Ctx>('what the two login roles may do, and with what', {});

withStartedProject(roles, { migrate: [] });

/** The error (or undefined) of logging in as `login` into `database` over verified TLS. */
async function loginTo(p: Project, login: 'app' | 'migrate', database: string): Promise<{ code?: string; message: string } | undefined> {
  const t = login === 'app' ? await appTarget(p) : await ownerTarget(p);
  return connect({ ...t, database }).then(
    (c) => void c.end(),
    (e) => e,
  );
}

roles("neither login may connect to the server's own databases (postgres, template1), so no temporary tables there", async (ctx) => {
  const p = ctx.p!;
  for (const login of ['app', 'migrate'] as const) {
    for (const db of ['postgres', 'template1']) {
      const e = await loginTo(p, login, db);
      assert.is(e?.code, '42501', `${login} into ${db}: ${e?.message ?? 'connected'}`);
      assert.match(e!.message, `permission denied for database "${db}"`);
    }
  }
});

roles('the application keeps its own database, temporary tables included', async (ctx) => {
  const p = ctx.p!;
  const c = await connect(await appTarget(p));
  try {
    await c.query('CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)');
    assert.is((await c.query('SELECT count(*)::int AS n FROM scratch')).rows[0].n, 1);
  } finally {
    await c.end();
  }
});

roles('db:up takes the access away again when someone gives it back', async (ctx) => {
  const p = ctx.p!;
  await withClient(await superuser(p, 'postgres'), (c) => c.query('GRANT CONNECT, TEMPORARY ON DATABASE postgres TO PUBLIC'));
  assert.is(await loginTo(p, 'app', 'postgres'), undefined);
  await ok(['db:up'], p.env);
  assert.is((await loginTo(p, 'app', 'postgres'))?.code, '42501');
});

roles(
  "the dirty-migration hint says which role drops an invalid index, and its command works where the app's login cannot",
  async (ctx) => {
    const p = ctx.p!;
    const files = {
      '000002_dup.up.sql': 'CREATE TABLE dup (x int);\nINSERT INTO dup VALUES (1), (1);\n',
      '000002_dup.down.sql': 'DROP TABLE dup;\n',
      // Fails on the duplicate after it has made the index: an INVALID index and a dirty database.
      '000003_dup_x.up.sql': 'CREATE UNIQUE INDEX CONCURRENTLY dup_x ON dup (x);\n',
      '000003_dup_x.down.sql': 'DROP INDEX CONCURRENTLY dup_x;\n',
    };
    for (const [n, sql] of Object.entries(files)) await fs.writeFile(path.join(p.migrationsDir, n), sql);
    const r = await cli(['db:migrate'], p.env);
    assert.is(r.code, 1, output(r));
    assert.equal(await versionRows(p), [{ version: 3, dirty: true }]);
    const hint = /^hint: (.*)$/m.exec(r.stderr)?.[1] ?? '';
    assert.match(
      hint,
      /^drop the invalid index \(DROP INDEX CONCURRENTLY dup_x\), then pnpm db:migrate:force 2, then pnpm db:migrate; run the DROP as app_owner, the migration role, which owns the index \(pnpm db:psql logs in as the application role, which gets "must be owner"; psql asks for the password in (\S+)\): psql /,
    );
    assert.is(/asks for the password in (\S+)\):/.exec(hint)![1], path.join(p.secretsDir, 'migrate_password'));
    // What db:psql does: psql as the application role. PostgreSQL refuses it.
    const t = await appTarget(p);
    const asApp = await run('psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-c', 'DROP INDEX CONCURRENTLY dup_x'], {
      PGHOST: 'localhost',
      PGPORT: String(p.port),
      PGUSER: t.user,
      PGDATABASE: t.database,
      PGPASSWORD: t.password,
      PGSSLMODE: 'verify-full',
      PGSSLROOTCERT: path.join(p.sslDir, 'ca.crt'),
    });
    assert.is.not(asApp.code, 0);
    assert.match(asApp.stderr, /must be owner of index dup_x/);
    // The hint's own command, run as printed from the project root; psql asks for the password, given here as a person would type it.
    const command = hint.slice(hint.indexOf('migrate_password): ') + 'migrate_password): '.length);
    assert.match(command, /^psql /);
    const asOwner = await run('bash', ['-c', command], { PGPASSWORD: await readSecretFile(p, 'migrate_password'), PGUSER: undefined });
    assert.is(asOwner.code, 0, output(asOwner));
    assert.equal(await query(p, `SELECT 1 FROM pg_class WHERE relname = 'dup_x'`), []);
  },
);

roles.run();

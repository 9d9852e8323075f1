import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import { UserError } from '@dbkit/core/errors';
import { nativeHome } from '@dbkit/core/runtime/native-home';
import { nativeReplica } from '@dbkit/core/runtime/native-replica';
import { makeProject, removeProject } from './setup/project.ts';
import { testCtx } from './setup/ctx.ts';

// db:replica looks for pg_basebackup before it makes anything: on a machine without a usable one (the
// embedded server with older client tools), the refusal leaves no replication secret, role or folder.

test('without a usable pg_basebackup, db:replica makes no secret file, role or standby folder', async () => {
  const p = await makeProject();
  try {
    const ctx = testCtx(p.env);
    const sql: string[] = [];
    const missing = new UserError(
      'pg_basebackup 15 cannot work with a PostgreSQL 16 server: install postgresql-client-16, or set PG_BIN_DIR',
    );
    const replica = nativeReplica(ctx, nativeHome(ctx), {
      running: async () => true,
      stop: async () => undefined,
      admin: async () => ({
        query: async (q: string) => {
          sql.push(q);
          return [['']];
        },
      }),
      roles: async () => {
        throw new Error('the primary roles are not needed before the base backup');
      },
      clientBin: async () => {
        throw missing;
      },
    });
    const e = await replica.ensure().then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.is(e, missing);
    const secrets = await fs.readdir(p.secretsDir).catch(() => [] as string[]);
    assert.equal(
      secrets.filter((n) => n.startsWith('replication_')),
      [],
      'no replication secret file',
    );
    assert.not.ok(
      sql.some((q) => /CREATE ROLE|ALTER ROLE/i.test(q)),
      `no role made: ${sql.join('; ')}`,
    );
    assert.not.ok(
      await fs.stat(`${p.nativeDir}/replica`).then(
        () => true,
        () => false,
      ),
      'no standby folder',
    );
  } finally {
    await removeProject(p);
  }
});

test.run();

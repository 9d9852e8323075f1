import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { withClient } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { cli, ownerTarget, readSecretFile, withStartedProject, type Project } from './setup/project.ts';
import { suQuery } from './setup/backup.ts';

interface Ctx {
  p?: Project;
}

const up = suite<Ctx>('db:up on a provisioned cluster skips provisioning only while nothing changed', {});

withStartedProject(up, { migrate: [] });

/** db:up --json: whether it provisioned; it must succeed either way. */
async function dbUp(p: Project, env: Record<string, string> = {}): Promise<boolean> {
  const r = await cli(['db:up', '--json'], { ...p.env, ...env });
  assert.is(r.code, 0, r.stdout + r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!).provisioned;
}

up('a second db:up, and one after db:down, provision nothing and still verify both logins', async ({ p }) => {
  assert.is(await dbUp(p!), false);
  assert.is((await cli(['db:down'], p!.env)).code, 0);
  assert.is(await dbUp(p!), false);
});

up('a secret file written again (same content) means provisioning runs once more', async ({ p }) => {
  const f = path.join(p!.secretsDir, 'app_user');
  await fs.writeFile(f, await fs.readFile(f, 'utf8'));
  assert.is(await dbUp(p!), true);
  assert.is(await dbUp(p!), false);
});

up("a grant changed behind the tool's back is put back on the next db:up", async ({ p }) => {
  const app = await readSecretFile(p!, 'app_user');
  await suQuery(p!, 'GRANT CONNECT ON DATABASE postgres TO PUBLIC');
  assert.is(await dbUp(p!), true);
  const rows = await suQuery(p!, `SELECT has_database_privilege('${app}', 'postgres', 'CONNECT') AS can`);
  assert.equal(rows, [{ can: false }]);
  assert.is(await dbUp(p!), false);
});

up("default privileges revoked behind the tool's back are put back", async ({ p }) => {
  const owner = await readSecretFile(p!, 'migrate_user');
  const db = await readSecretFile(p!, 'postgres_db');
  await suQuery(
    p!,
    `ALTER DEFAULT PRIVILEGES FOR ROLE "${owner}" IN SCHEMA public REVOKE ALL ON TABLES FROM PUBLIC, "${await readSecretFile(p!, 'app_user')}"`,
    db,
  );
  assert.is(await dbUp(p!), true);
  const rows = await suQuery(
    p!,
    `SELECT count(*)::int AS n FROM pg_default_acl WHERE defaclrole = '${owner}'::regrole AND defaclobjtype = 'r'`,
    db,
  );
  assert.equal(rows, [{ n: 1 }]);
});

up("a password changed in the server behind the tool's back is drift, reported even when the fingerprint matched", async ({ p }) => {
  const app = await readSecretFile(p!, 'app_user');
  await suQuery(p!, `ALTER ROLE "${app}" PASSWORD 'changed-behind-the-tools-back'`);
  const r = await cli(['db:up'], p!.env);
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /app_password no longer matches the password of role/);
  // Put back as the hint says (the database follows the file): nothing else changed, and the app's login is proven.
  assert.is((await cli(['db:secrets:rotate', 'app', '--from-file'], p!.env)).code, 0);
  assert.is(await dbUp(p!), false);
});

up('the environment is still recorded when provisioning is skipped (NODE_ENV=production upgrades it)', async ({ p }) => {
  assert.is(await dbUp(p!), false);
  assert.is(await dbUp(p!, { NODE_ENV: 'production' }), false);
  const rows = await withClient(await ownerTarget(p!), async (c) => (await c.query('SELECT name FROM pgdeploy.environment')).rows);
  assert.equal(rows, [{ name: 'production' }]);
});

up.run();

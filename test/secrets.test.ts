import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ensureSecrets, readSecrets, newPassword } from '@dbkit/core/secrets';
import { task as secretsTask } from '../tasks/secrets.ts';
import { testCtx } from './setup/ctx.ts';

const s = suite<{ dir: string; ctx: ReturnType<typeof testCtx> }>('secrets');

s.before.each(async (c) => {
  c.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-secrets-'));
  c.ctx = testCtx({ DB_SECRETS_DIR: path.join(c.dir, 'secrets') });
});
s.after.each(async (c) => fs.rm(c.dir, { recursive: true, force: true }));

s('a new password is 32 random bytes, URL-safe, and different each time', () => {
  const a = newPassword();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.is.not(a, newPassword());
});

s('without a terminal the user and database default to app', async (c) => {
  const r = await ensureSecrets(c.ctx, { force: false });
  assert.equal(r.created, [
    'postgres_user',
    'postgres_password',
    'postgres_db',
    'migrate_user',
    'migrate_password',
    'app_user',
    'app_password',
  ]);
  const v = await readSecrets(c.ctx);
  assert.is(v.app.user, 'app');
  assert.is(v.database, 'app');
  assert.is(v.migrator.user, 'app_owner');
  assert.is(v.admin.user, 'postgres');
  assert.is(new Set([v.admin.password, v.migrator.password, v.app.password]).size, 3);
});

s('answers to the questions are used, and a bad name is refused before anything is written', async (c) => {
  const answers: Record<string, string> = { postgres_user: 'admin', postgres_db: 'shop', migrate_user: 'shop_owner', app_user: 'shop_app' };
  await ensureSecrets(c.ctx, { force: false, question: async (n) => answers[n] });
  const v = await readSecrets(c.ctx);
  assert.is(v.app.user, 'shop_app');
  assert.is(v.database, 'shop');
  const err = await ensureSecrets(c.ctx, { force: true, question: async () => 'bad name; drop' }).catch((e) => e);
  assert.match(err.message, /not a plain PostgreSQL identifier/);
  assert.is((await readSecrets(c.ctx)).app.user, 'shop_app');
});

s('no temporary file is left behind, and files are 0600 in a 0700 folder', async (c) => {
  await ensureSecrets(c.ctx, { force: false });
  const dir = path.join(c.dir, 'secrets');
  assert.equal((await fs.readdir(dir)).sort(), [
    'app_password',
    'app_user',
    'migrate_password',
    'migrate_user',
    'postgres_db',
    'postgres_password',
    'postgres_user',
  ]);
  assert.is((await fs.stat(dir)).mode & 0o777, 0o700);
  for (const f of await fs.readdir(dir)) assert.is((await fs.stat(path.join(dir, f))).mode & 0o777, 0o600);
});

s('the three logins must be different roles', async (c) => {
  await ensureSecrets(c.ctx, { force: false });
  await fs.writeFile(path.join(c.dir, 'secrets', 'app_user'), 'postgres');
  const err = await readSecrets(c.ctx).catch((e) => e);
  assert.match(err.message, /must be three different roles/);
});

s('db:secrets on a terminal asks each name through ctx.ask, the default as the initial answer; an empty answer keeps it', async (c) => {
  const asked: [string, string | undefined][] = [];
  const answers: Record<string, string> = { 'database user': 'admin', 'database name': '' };
  const ctx = testCtx(
    { DB_SECRETS_DIR: path.join(c.dir, 'secrets') },
    {
      interactive: true,
      ask: async (q, initial) => (asked.push([q, initial]), answers[q] ?? initial ?? false),
    },
  );
  await secretsTask.run(ctx, { flags: {}, positionals: [] });
  assert.equal(asked, [
    ['database user', 'postgres'],
    ['database name', 'app'],
    ['migrate_user', 'app_owner'],
    ['app_user', 'app'],
  ]);
  const v = await readSecrets(ctx);
  assert.is(v.admin.user, 'admin');
  assert.is(v.database, 'app');
});

s.run();

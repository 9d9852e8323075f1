import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { withClient } from '@dbkit/core/pg';
import { serverBinDir } from '@dbkit/core/pgbin';
import { ROOT, cli, freePort, type CliResult } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// Root runs the tool from a project the server user cannot reach (a clone under /root, which is
// 0700): its binaries, its configuration and DB_NATIVE_DIR all lie behind a folder closed to that
// user. db:up then keeps the server's files in /var/lib/pg-deploy/<project>-<hash> (DB_NATIVE_DIR
// a link to it), with a checked copy of the server binaries and copies of the two configuration files.

interface Ctx {
  /** The closed folder (as /root is) and the project in it. */
  home?: string;
  app?: string;
  env?: Record<string, string>;
  port?: number;
}

const root = process.getuid?.() === 0;
const closed = suite<Ctx>('the native runtime, as root, from a project under a 0700 folder');

setUp(closed, async (ctx) => {
  ctx.home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-home-'));
  await fs.chmod(ctx.home, 0o700);
  const app = (ctx.app = path.join(ctx.home, 'app'));
  await fs.mkdir(path.join(app, 'database/infra'), { recursive: true });
  await fs.cp(path.join(ROOT, 'database/infra/config'), path.join(app, 'database/infra/config'), { recursive: true });
  await fs.mkdir(path.join(app, 'database/migrations'), { recursive: true });
  for (const f of ['000001_create_accounts.up.sql', '000001_create_accounts.down.sql']) {
    await fs.copyFile(path.join(ROOT, 'database/migrations', f), path.join(app, 'database/migrations', f));
  }
  // The server binaries where a clone keeps them: inside the project, out of the server user's reach.
  const embedded = path.dirname(serverBinDir(undefined));
  execFileSync('cp', ['-a', embedded, path.join(app, 'pg')]);
  ctx.port = await freePort();
  // Only what a user would set: the project root (as `node dist/cli.js` in the clone finds it), the
  // runtime, a free port and the binaries; every folder takes its default inside the project.
  ctx.env = {
    DB_PROJECT_ROOT: app,
    DB_RUNTIME: 'native',
    ENV_DB_PORT: String(ctx.port),
    PG_BIN_DIR: path.join(app, 'pg/bin'),
    DB_UP_TIMEOUT: '30',
  };
});

closed.after(async (ctx) => {
  if (!ctx.app) return;
  await cli(['db:down'], ctx.env!, { cwd: ctx.app }).catch(() => undefined);
  const link = await fs.readlink(path.join(ctx.app, '.data')).catch(() => undefined);
  if (link?.startsWith('/var/lib/pg-deploy/')) await fs.rm(link, { recursive: true, force: true });
  await fs.rm(ctx.home!, { recursive: true, force: true });
});

const run = (ctx: Ctx, args: string[]) => cli(args, ctx.env!, { cwd: ctx.app });
const say = (r: CliResult) => `exit ${r.code}\n${r.stdout}${r.stderr}`;

async function appQuery(ctx: Ctx): Promise<number> {
  const s = (n: string) => fs.readFile(path.join(ctx.app!, 'database/infra/secrets', n), 'utf8');
  const t = {
    host: '127.0.0.1',
    port: ctx.port!,
    user: await s('app_user'),
    password: await s('app_password'),
    database: await s('postgres_db'),
    ca: await fs.readFile(path.join(ctx.app!, 'database/infra/ssl/ca.crt'), 'utf8'),
  };
  return withClient(t, async (c) => (await c.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n);
}

if (!root) {
  console.log('native-home-0700 tests not run: they need root (the server then runs as the postgres user)');
} else {
  closed("deploys: secrets, certificates, db:up, migrations; the server's files in /var/lib/pg-deploy, linked from .data", async (ctx) => {
    const postgresCannot = execFileSync('su', [
      '-s',
      '/bin/sh',
      'postgres',
      '-c',
      `test -x ${ctx.app}/pg/bin/postgres && echo reach || echo blocked`,
    ])
      .toString()
      .trim();
    assert.is(postgresCannot, 'blocked', 'the server user cannot reach the project (the setting under test)');
    for (const t of [['db:secrets'], ['db:secure']]) assert.is((await run(ctx, t)).code, 0);
    const up = await run(ctx, ['db:up']);
    assert.is(up.code, 0, say(up));
    assert.match(up.stderr, /its files live in \/var\/lib\/pg-deploy\/app-[0-9a-f]{10}, linked from .data/);
    assert.match(up.stderr, /installed a checked copy of the server in \/var\/lib\/pg-deploy\/app-[0-9a-f]{10}\/server/);
    const link = await fs.readlink(path.join(ctx.app!, '.data'));
    assert.match(link, /^\/var\/lib\/pg-deploy\/app-[0-9a-f]{10}$/);
    const st = await fs.stat(link);
    assert.is(st.mode & 0o777, 0o700, "the server's folder is its own");
    assert.is(st.uid, Number(execFileSync('id', ['-u', 'postgres'])));
    assert.is((await fs.stat('/var/lib/pg-deploy')).mode & 0o777, 0o755);
    assert.ok(await fs.stat(path.join(link, 'conf/pg_hba.conf')), 'the configuration is where the server can read it');
    const migrate = await run(ctx, ['db:migrate']);
    assert.is(migrate.code, 0, say(migrate));
    assert.is(await appQuery(ctx), 0, 'the application logs in over verified TLS');
    const status = await run(ctx, ['db:status']);
    assert.is(status.code, 0, say(status));
    assert.match(status.stdout, /server\s+up since/);
  });

  closed('a second start reuses the copy; a changed original is copied again', async (ctx) => {
    assert.is((await run(ctx, ['db:down'])).code, 0);
    const again = await run(ctx, ['db:up']);
    assert.is(again.code, 0, say(again));
    assert.not.match(again.stderr, /installed a checked copy/);
    assert.is((await run(ctx, ['db:down'])).code, 0);
    // What `pnpm install` of another build would do: a file of the installation changes.
    const file = path.join(ctx.app!, 'pg/share/postgresql/postgresql.conf.sample');
    await fs.appendFile(file, '\n# changed\n');
    const changed = await run(ctx, ['db:up']);
    assert.is(changed.code, 0, say(changed));
    assert.match(changed.stderr, /installed a checked copy of the server/);
    const copy = path.join(await fs.readlink(path.join(ctx.app!, '.data')), 'server/share/postgresql/postgresql.conf.sample');
    assert.is(await fs.readFile(copy, 'utf8'), await fs.readFile(file, 'utf8'));
  });

  closed("db:delete removes the server's folder with its link", async (ctx) => {
    const link = await fs.readlink(path.join(ctx.app!, '.data'));
    const del = await run(ctx, ['db:delete', '--yes', '--no-backup']);
    assert.is(del.code, 0, say(del));
    assert.not.ok(
      await fs.lstat(path.join(ctx.app!, '.data')).then(
        () => true,
        () => false,
      ),
      '.data is gone',
    );
    assert.not.ok(
      await fs.stat(link).then(
        () => true,
        () => false,
      ),
      `${link} is gone`,
    );
  });
}

closed.run();

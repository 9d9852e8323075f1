import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { connect } from '@dbkit/core/pg';
import { appTarget, cli, ok, ownerTarget, removeProject, startProject, type Project } from './setup/project.ts';
import { backupProject, fillShop, superuser, suQuery } from './setup/backup.ts';
import { killAt, type KillPoint } from './setup/interrupt.ts';
import { until } from './setup/engine.ts';
import { setUp } from './setup/hooks.ts';

// db:restore killed at every step it prints, at several delays after each: the application
// database is never left unreachable (refusing connections, or renamed away), and the next
// db:restore succeeds. Then the states an older, interrupted restore could leave are repaired by
// db:up and db:restore, each saying so in one line.

interface Ctx {
  p?: Project;
  backup?: string;
}

const LINES = 5000; // order_lines in the backup

/** Every role logs in with its file: the app and the schema owner over verified TLS (reading rows), the superuser on the socket. */
async function everyRoleLogsIn(p: Project): Promise<string | undefined> {
  try {
    for (const t of [await appTarget(p), await ownerTarget(p), await superuser(p)]) {
      const c = await connect(t, 5000);
      try {
        const n = (await c.query('SELECT count(*)::int AS n FROM order_lines')).rows[0].n;
        if (n !== LINES) return `${t.user} sees ${n} order lines`;
      } finally {
        await c.end().catch(() => {});
      }
    }
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Reachable with every role. The server may still be finishing the statement the killed task sent
 * (ending sessions waits up to 5 s for them), so this is a bounded wait, not an instant check.
 */
async function reachable(p: Project, after: string): Promise<void> {
  let last: string | undefined;
  try {
    await until(`every role to log in after ${after}`, 20_000, async () => (last = await everyRoleLogsIn(p)) === undefined);
  } catch {
    throw new Error(`after ${after}, the database is not reachable with every role: ${last}`);
  }
}

/** An application's idle session on the database, which the swap has to end. */
async function appSession(p: Project): Promise<pg.Client> {
  const c = await connect(await appTarget(p), 5000);
  c.on('error', () => {}); // ended by the restore: expected
  return c;
}

/** Both suites' set-up: a started, migrated project holding the shop, with one verified backup (ctx.backup); after, removed. */
function withShopBackup(s: Test<Ctx>): void {
  setUp(s, async (ctx) => {
    ctx.p = await backupProject();
    await startProject(ctx.p);
    await ok(['db:migrate'], ctx.p.env);
    await fillShop(ctx.p);
    ctx.backup = JSON.parse((await ok(['db:backup', '--verify', '--json'], ctx.p.env)).stdout).name;
  });
  s.after(async (ctx) => {
    await removeProject(ctx.p);
  });
}

const restore = suite<Ctx>('db:restore killed at any step');

withShopBackup(restore);

restore('killed at each step it prints, the database stays reachable with every role, and the next db:restore succeeds', async (ctx) => {
  const p = ctx.p!;
  const args = ['db:restore', ctx.backup!, '--yes', '--no-backup'];
  // The points where its output changes: each line a whole run prints on stderr.
  const full = await ok(args, p.env);
  const steps = full.stderr.split('\n').filter(Boolean);
  assert.ok(
    steps.some((l) => /swapping/.test(l)),
    full.stderr,
  );
  const points: KillPoint[] = [];
  for (const l of steps) {
    const line = new RegExp(l.slice(0, 50).replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    for (const afterMs of [0, 10, 30, 60, 120]) points.push({ line, afterMs, label: `${afterMs} ms after "${l}"` });
  }
  let killed = 0;
  for (const at of points) {
    const held = await appSession(p);
    const r = await killAt(args, p.env, at);
    await held.end().catch(() => {});
    if (r.killed) killed++;
    else assert.is(r.code, 0, `${at.label}: ${r.stderr}`);
    await reachable(p, `a kill ${at.label}`);
    const next = await cli(args, p.env);
    assert.is(next.code, 0, `the db:restore after a kill ${at.label}: ${next.stdout}${next.stderr}`);
    await reachable(p, `the db:restore that followed a kill ${at.label}`);
    // Half-restored copies a kill leaves are another test's subject; dropped here to bound the disk.
    for (const { datname } of await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_%'", 'postgres')) {
      await suQuery(p, `DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`, 'postgres');
    }
  }
  assert.ok(killed >= points.length / 2, `only ${killed} of ${points.length} runs were killed before they finished`);
});

restore(
  'a db:restore killed while pg_restore runs leaves a copy the next db:backup:verify removes, since its name carries the dead pid',
  async (ctx) => {
    const p = ctx.p!;
    const copies = async () =>
      (await suQuery(p, "SELECT datname FROM pg_database WHERE datname LIKE 'pgdeploy\\_restore\\_%'", 'postgres')).map(
        (r) => r.datname as string,
      );
    assert.equal(await copies(), [], 'no copy before');
    const r = await killAt(['db:restore', ctx.backup!, '--yes', '--no-backup'], p.env, {
      line: /restoring .* into a new database/,
      afterMs: 0,
      label: 'at "restoring"',
    });
    assert.ok(r.killed, `killed before it finished: ${r.stderr}`);
    const left = await copies();
    assert.is(left.length, 1, `the kill left the half-restored copy: ${left}`);
    assert.match(left[0], /^pgdeploy_restore_\d+_[0-9a-f]+$/);
    await ok(['db:backup:verify'], p.env);
    assert.equal(await copies(), [], 'the next verify removed it');
    await reachable(p, 'the kill during pg_restore');
  },
);

restore.run();

// ---------------------------------------------------------------------------------------------
const repair = suite<Ctx>('db:up and db:restore repair what an interrupted restore left');

withShopBackup(repair);

const refuseConnections = (p: Project) => suQuery(p, 'ALTER DATABASE app WITH ALLOW_CONNECTIONS false', 'postgres');
const repaired = (stderr: string) => stderr.split('\n').filter((l) => /repaired/.test(l));

repair('a database left refusing connections: db:up (running or stopped) and db:restore allow them again, in one line', async (ctx) => {
  const p = ctx.p!;
  await refuseConnections(p);
  const up = await cli(['db:up'], p.env);
  assert.is(up.code, 0, up.stderr);
  assert.is(repaired(up.stderr).length, 1, up.stderr);
  assert.match(repaired(up.stderr)[0], /database app refused connections.*accepts them again/);
  await reachable(p, 'db:up');

  await refuseConnections(p);
  await ok(['db:down'], p.env);
  const cold = await cli(['db:up'], p.env);
  assert.is(cold.code, 0, cold.stderr);
  assert.is(repaired(cold.stderr).length, 1, cold.stderr);
  await reachable(p, 'db:up of a stopped server');

  await refuseConnections(p);
  const r = await cli(['db:restore', ctx.backup!, '--yes', '--no-backup'], p.env);
  assert.is(r.code, 0, r.stderr);
  assert.is(repaired(r.stderr).length, 1, r.stderr);
  await reachable(p, 'db:restore');
});

repair('a database renamed away: db:up gives it its name back, in one line', async (ctx) => {
  const p = ctx.p!;
  await suQuery(p, 'ALTER DATABASE app RENAME TO pgdeploy_replaced_0badf00d', 'postgres');
  const up = await cli(['db:up'], p.env);
  assert.is(up.code, 0, up.stderr);
  assert.is(repaired(up.stderr).length, 1, up.stderr);
  assert.match(repaired(up.stderr)[0], /database app was missing.*pgdeploy_replaced_0badf00d.*is app again/);
  await reachable(p, 'db:up');
});

repair(
  'a database renamed away while the server is stopped: db:up gives it its name back before provisioning could create an empty one',
  async (ctx) => {
    const p = ctx.p!;
    const before = await suQuery(p, 'SELECT count(*)::int AS n FROM pg_class', 'app');
    await suQuery(p, 'ALTER DATABASE app RENAME TO pgdeploy_replaced_0ddba11', 'postgres');
    await ok(['db:down'], p.env);
    const up = await cli(['db:up'], p.env);
    assert.is(up.code, 0, up.stderr);
    assert.is(repaired(up.stderr).length, 1, up.stderr);
    assert.match(repaired(up.stderr)[0], /database app was missing.*pgdeploy_replaced_0ddba11.*is app again/);
    const left = await suQuery(p, "SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE 'pgdeploy_%'", 'postgres');
    assert.is(left[0].n, 0, 'no copy is left beside it');
    assert.equal(
      await suQuery(p, 'SELECT count(*)::int AS n FROM pg_class', 'app'),
      before,
      'the database with its tables, not an empty one',
    );
    await reachable(p, 'db:up of a stopped server');
  },
);

repair(
  'missing while a finished restored copy exists: db:restore takes that copy as the database, in one line, then restores',
  async (ctx) => {
    const p = ctx.p!;
    // The mark restore.ts puts on a copy pg_restore finished (its COMPLETE constant).
    await suQuery(p, 'ALTER DATABASE app RENAME TO pgdeploy_restore_0badf00d', 'postgres');
    await suQuery(p, "COMMENT ON DATABASE pgdeploy_restore_0badf00d IS 'pg-deploy: a complete restore, not yet swapped in'", 'postgres');
    const r = await cli(['db:restore', ctx.backup!, '--yes', '--no-backup'], p.env);
    assert.is(r.code, 0, r.stderr);
    assert.is(repaired(r.stderr).length, 1, r.stderr);
    assert.match(repaired(r.stderr)[0], /database app was missing.*pgdeploy_restore_0badf00d.*is now app/);
    await reachable(p, 'db:restore');
    const comment = await suQuery(
      p,
      "SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = 'app'",
      'postgres',
    );
    assert.is(comment[0].c, null, 'the mark goes with the swap');
  },
);

repair.run();

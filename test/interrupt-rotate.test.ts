import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { connect } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native-home';
import { appTarget, cli, ok, ownerTarget, readSecretFile, withStartedProject, type Project } from './setup/project.ts';
import { killAt, type KillPoint } from './setup/interrupt.ts';
import { everyRoleLogsIn } from './setup/backup.ts';
import { spawnCli } from './setup/engine.ts';

// db:secrets:rotate killed across its whole run: at even steps over the length of a whole run,
// after the step it prints, and at the moments its files change (.new written, .old written, the
// secret replaced). After
// each kill the next run of the same command succeeds, every role logs in with its file, no
// .old/.new is left, and db:up finds no drift.

interface Ctx {
  p?: Project;
}

const leftovers = async (p: Project) => (await fs.readdir(p.secretsDir)).filter((f) => /\.(old|new)$/.test(f));

/** The run's length from spawn to exit, to spread the kills over (a placement, never asserted on). */
async function runLength(args: string[], env: Record<string, string>): Promise<number> {
  const t0 = Date.now();
  const r = await spawnCli(args, env).done;
  if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
  return Date.now() - t0;
}

/**
 * Where to kill: at even steps over a whole run's length, and at the moments its files change.
 * Each is made just before its run, so "changed" compares with what the file holds then.
 */
function points(p: Project, file: string, length: number): (() => Promise<KillPoint>)[] {
  const secret = path.join(p.secretsDir, file);
  const exists = (f: string) =>
    fs.stat(path.join(p.secretsDir, f)).then(
      () => true,
      () => false,
    );
  const STEPS = 8;
  const at: (() => Promise<KillPoint>)[] = [];
  for (let k = 1; k <= STEPS; k++) {
    const afterMs = Math.round((k * length) / STEPS);
    at.push(async () => ({ afterMs, label: `${afterMs} ms after the start` }));
  }
  for (const afterMs of [0, 5, 15])
    at.push(async () => ({ afterMs, line: /changing the password of/, label: `${afterMs} ms after "changing the password of"` }));
  at.push(async () => ({ afterMs: 0, label: `${file}.new appeared`, check: { dir: p.secretsDir, holds: () => exists(`${file}.new`) } }));
  at.push(async () => ({ afterMs: 0, label: `${file}.old appeared`, check: { dir: p.secretsDir, holds: () => exists(`${file}.old`) } }));
  at.push(async () => {
    const before = await fs.readFile(secret, 'utf8');
    return {
      afterMs: 0,
      label: `${file} changed`,
      check: { dir: p.secretsDir, holds: async () => (await fs.readFile(secret, 'utf8')) !== before },
    };
  });
  return at;
}

async function killEverywhere(p: Project, args: string[], file: string): Promise<number> {
  const length = await runLength(args, p.env);
  let killed = 0;
  for (const make of points(p, file, length)) {
    const at = await make();
    const r = await killAt(args, p.env, at);
    if (r.killed) killed++;
    else assert.is(r.code, 0, `${args.join(' ')} not killed (${at.label}): ${r.stderr}`);
    const next = await cli(args, p.env);
    assert.is(next.code, 0, `${args.join(' ')} after a kill (${at.label}): ${next.stdout}${next.stderr}`);
    await everyRoleLogsIn(p).catch((e) => assert.unreachable(`after a kill (${at.label}) and a second run: ${(e as Error).message}`));
    assert.equal(await leftovers(p), [], `after a kill (${at.label}) and a second run`);
    const up = await cli(['db:up'], p.env);
    assert.is(up.code, 0, `db:up after a kill (${at.label}) and a second run: ${up.stderr}`);
  }
  return killed;
}

const rotation = suite<Ctx>('db:secrets:rotate killed at any moment');

withStartedProject(rotation);

for (const role of ['postgres', 'app', 'migrate'] as const) {
  rotation(`${role}: after a kill at any moment, the next run finishes or rolls back, and every role logs in`, async (ctx) => {
    const killed = await killEverywhere(ctx.p!, ['db:secrets:rotate', role], `${role}_password`);
    assert.ok(killed >= 3, `only ${killed} runs were killed before they finished`);
  });
}

rotation('--all: after a kill at any moment, the next run succeeds, and every role logs in', async (ctx) => {
  const killed = await killEverywhere(ctx.p!, ['db:secrets:rotate', '--all'], 'postgres_password');
  assert.ok(killed >= 3, `only ${killed} runs were killed before they finished`);
});

rotation(
  'the state a killed rotation leaves (the new password in the file, the working one in .old): the retry rolls back, keeps .old until then, and rotates',
  async (ctx) => {
    const p = ctx.p!;
    const file = path.join(p.secretsDir, 'postgres_password');
    const working = await fs.readFile(file, 'utf8');
    await fs.copyFile(file, `${file}.old`);
    await fs.writeFile(file, 'a-password-the-server-never-had-0123456789');
    const up = await cli(['db:up'], p.env);
    assert.is(up.code, 1);
    assert.match(
      up.stderr,
      /^hint: .*postgres_password.*pnpm db:secrets:rotate postgres.*\.old/m,
      'the drift hint names the file to put back',
    );
    const r = await cli(['db:secrets:rotate', 'postgres'], p.env);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /rolled back an interrupted rotation of postgres/);
    assert.is.not(await fs.readFile(file, 'utf8'), working, 'and then rotated');
    assert.equal(await leftovers(p), []);
    await everyRoleLogsIn(p);
    await ok(['db:up'], p.env);
  },
);

rotation('when the server accepts none of the files, nothing is deleted and the error names them', async (ctx) => {
  const p = ctx.p!;
  const file = path.join(p.secretsDir, 'app_password');
  const working = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, 'wrong-one-0123456789');
  await fs.writeFile(`${file}.old`, 'wrong-two-0123456789', { mode: 0o600 });
  const r = await cli(['db:secrets:rotate', 'app'], p.env);
  assert.is(r.code, 1);
  assert.match(r.stderr, /accepts none of .*app_password, .*app_password\.old/);
  assert.is(await fs.readFile(`${file}.old`, 'utf8'), 'wrong-two-0123456789', '.old is kept');
  assert.is(await fs.readFile(file, 'utf8'), 'wrong-one-0123456789', 'the file is as it was');
  await fs.writeFile(file, working);
  await fs.rm(`${file}.old`);
  await ok(['db:secrets:rotate', 'app'], p.env);
  await everyRoleLogsIn(p);
});

rotation.run();

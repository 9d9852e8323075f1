import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { withClient } from '@dbkit/core/pg';
import { appTarget, ROOT } from './setup/project.ts';
import {
  cli,
  containerId,
  engineSuite,
  inspectContainer,
  makeDockerProject,
  removeDockerProject,
  run,
  startDockerProject,
  until,
  type DockerProject,
} from './setup/docker.ts';
import { setUp } from './setup/hooks.ts';

// Restarting dockerd stops every container on the engine, other people's included, so this file
// runs only where the engine is ours to restart: a dockerd started by `.ci/engine.sh start`, whose
// pid file names a live dockerd (engine.sh restart refuses any other). Anywhere else it says so in
// one line and registers no test; with DB_TEST_ENGINE=required (CI) that is a failing test instead.
//
// Why the stack comes back: a daemon that shuts down stops its containers without marking them
// "manually stopped" (moby daemon/kill.go: `if !daemon.IsShuttingDown() { HasBeenManuallyStopped =
// true }`), so on start it restarts those whose policy is `unless-stopped`, as api-db's is.

interface Ctx {
  p?: DockerProject;
  rows?: { n: number; sum: string };
}

const STATE = process.env.PGDEPLOY_ENGINE_STATE || '/run/pg-deploy-engine';
const PID_FILE = path.join(STATE, 'dockerd.pid');

/** The dockerd that `.ci/engine.sh start` started, if its pid file names one that runs. */
function ourDockerd(): { ok: true; pid: number } | { ok: false; why: string } {
  let pid: number;
  try {
    pid = Number(readFileSync(PID_FILE, 'utf8').trim());
  } catch {
    return { ok: false, why: `${PID_FILE} is missing: the engine was not started by .ci/engine.sh start` };
  }
  if (!Number.isInteger(pid) || pid <= 0) return { ok: false, why: `${PID_FILE} holds no pid` };
  let comm: string;
  try {
    comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return { ok: false, why: `${PID_FILE} names pid ${pid}, which does not run` };
  }
  return comm === 'dockerd' ? { ok: true, pid } : { ok: false, why: `${PID_FILE} names pid ${pid}, which is ${comm}, not dockerd` };
}

/** The suite, only where a restartable dockerd runs (see above); null otherwise. */
function restartSuite(name: string) {
  const s = engineSuite<Ctx>(name);
  if (!s) return null; // engineSuite said why, or registered its failing test
  const d = ourDockerd();
  if (d.ok) return s;
  if (process.env.DB_TEST_ENGINE === 'required') {
    s('dockerd was started by .ci/engine.sh start, so this test may restart it (DB_TEST_ENGINE=required)', () => {
      throw new Error(`${d.why}; start the engine with .ci/engine.sh start`);
    });
    s.run();
    return null;
  }
  process.stderr.write(`real-engine test not run: ${name}: ${d.why}\n`);
  return null;
}

async function appQuery(p: DockerProject, sql: string): Promise<Record<string, unknown>[]> {
  return withClient(await appTarget(p), async (c) => (await c.query(sql)).rows);
}

const ROWS = "SELECT count(*)::int AS n, md5(coalesce(string_agg(email, ',' ORDER BY id), '')) AS sum FROM accounts";
const serverStart = async (p: DockerProject) => String((await appQuery(p, 'SELECT pg_postmaster_start_time()::text AS t'))[0].t);

// ---------------------------------------------------------------------------------------------
const engineRestart = restartSuite('the stack comes back by itself after dockerd restarts');

if (engineRestart) {
  setUp(engineRestart, async (ctx) => {
    ctx.p = await makeDockerProject();
    await startDockerProject(ctx.p, { migrate: true });
    await appQuery(ctx.p, "INSERT INTO accounts (email) SELECT 'e' || i || '@example.com' FROM generate_series(1, 300) i");
    ctx.rows = (await appQuery(ctx.p, ROWS))[0] as { n: number; sum: string };
    assert.is(ctx.rows.n, 300);
  });

  engineRestart.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });

  engineRestart('after .ci/engine.sh restart, api-db is running and healthy again by itself, with every committed row', async (ctx) => {
    const p = ctx.p!;
    const id = await containerId(p, 'api-db');
    assert.is((await inspectContainer(id)).health, 'healthy');
    const startedBefore = await serverStart(p);
    const before = ourDockerd();
    if (!before.ok) throw new Error(`the dockerd to restart no longer runs: ${before.why}`);
    // engine.sh waits for the old dockerd to exit (it stops the containers first) and for the new one to answer.
    const r = await run('bash', [path.join(ROOT, '.ci/engine.sh'), 'restart'], {}, { timeoutMs: 300_000 });
    assert.not.ok(r.killed, `.ci/engine.sh restart did not finish:\n${r.stderr}`);
    assert.is(r.code, 0, r.stderr);
    const after = ourDockerd();
    if (!after.ok) throw new Error(`no dockerd runs after the restart: ${after.why}`);
    assert.is.not(after.pid, before.pid, 'a new dockerd');
    // Nothing here starts it: only the restart policy can.
    await until('api-db running and healthy after the engine restart', 180_000, async () => {
      const s = await inspectContainer(id);
      return s.status === 'running' && s.health === 'healthy';
    });
    const startedAfter = await until('a TLS query as the application role', 120_000, () => serverStart(p));
    assert.is.not(startedAfter, startedBefore, 'the server was stopped and started again');
    assert.is(await containerId(p, 'api-db'), id, 'the same container, not a new one');
    assert.equal((await appQuery(p, ROWS))[0], ctx.rows, 'every committed row');
    const status = await cli(['db:status'], p.env);
    assert.is(status.code, 0, status.stderr);
    assert.match(status.stdout, /^version\s+1$/m);
  });

  engineRestart.run();
}

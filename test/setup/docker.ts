import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { suite, type Test } from 'uvu';
import { setUp } from './hooks.ts';
import { STAND_INS } from '@dbkit/core/images';
import { cli, makeProject, ok, run, ROOT, type CliResult, type Project } from './project.ts';

/**
 * The real-engine tests: a real Docker engine with Compose v2, the stand-in images of
 * `pnpm images:build`, and each test file on its own Compose project (name, network, volume, ports),
 * so they run beside each other and beside a user's own stack, which they never touch.
 *
 * Where no engine answers, each file says so in one line and registers no test (nothing is counted
 * as passed). With DB_TEST_ENGINE=required (CI), a missing engine is a failing test instead.
 */

export const COMPOSE_FILE = path.join(ROOT, 'infra/docker-compose.yml');
export const IMAGES_ENV = { DB_IMAGE: STAND_INS.db, MIGRATE_IMAGE: STAND_INS.migrate, NODE_IMAGE: STAND_INS.node };

let engineChecked: { ok: true } | { ok: false; why: string } | undefined;

/** Whether a Docker engine with Compose v2 answers here (asked once per process). */
export function engine(): { ok: true } | { ok: false; why: string } {
  if (engineChecked) return engineChecked;
  const info = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8', timeout: 20_000 });
  const compose = spawnSync('docker', ['compose', 'version', '--short'], { encoding: 'utf8', timeout: 20_000 });
  if (info.status !== 0)
    engineChecked = { ok: false, why: `no Docker engine answers (${(info.stderr || String(info.error ?? '')).trim().split('\n')[0]})` };
  else if (compose.status !== 0) engineChecked = { ok: false, why: 'Docker Compose v2 is not installed' };
  else engineChecked = { ok: true };
  return engineChecked;
}

/**
 * A uvu suite for the real engine, or null where none answers (after one line saying so). The caller
 * registers its tests only on a suite it got back.
 */
export function engineSuite<T>(name: string): Test<T> | null {
  const e = engine();
  if (e.ok) return suite<T>(name);
  if (process.env.DB_TEST_ENGINE === 'required') {
    const s = suite<T>(name);
    s('a Docker engine with Compose v2 answers (DB_TEST_ENGINE=required)', () => {
      throw new Error(`${e.why}; start one (.ci/engine.sh install && .ci/engine.sh start)`);
    });
    s.run();
    return null;
  }
  process.stderr.write(`real-engine tests not run: ${name}: ${e.why}\n`);
  return null;
}

let imagesBuilt: Promise<void> | undefined;

/** The stand-in images, built once per process when missing (a cached build takes under a second). */
export function ensureImages(): Promise<void> {
  imagesBuilt ??= ok(['images:build'], {}).then(() => undefined);
  return imagesBuilt;
}

export interface DockerProject extends Project {
  /** The Compose project name: its containers, network and volume carry it. */
  name: string;
}

/** A throw-away project on the docker runtime, with its own Compose project name and free ports. */
export async function makeDockerProject(opts: Parameters<typeof makeProject>[0] = {}): Promise<DockerProject> {
  await ensureImages();
  const p = await makeProject({ prefix: 'pgdeploy-docker-', ...opts });
  const name = `pgdt-${randomBytes(4).toString('hex')}`;
  p.env = {
    ...p.env,
    ...IMAGES_ENV,
    DB_RUNTIME: 'docker',
    COMPOSE_PROJECT_NAME: name,
    DB_BACKUP_DIR: path.join(p.dir, 'backups'),
    DB_UP_TIMEOUT: '120',
  };
  return { ...p, name };
}

/** Runs `docker compose` on the project, as the tasks do (same file, same interpolated variables). */
export function compose(p: DockerProject, args: string[], opts: { input?: string } = {}): Promise<CliResult> {
  return run('docker', ['compose', '-f', COMPOSE_FILE, ...args], composeVars(p), opts);
}

/** A root shell command in api-db (`docker compose exec`); its stdout, trimmed. Throws with its stderr when it fails. */
export async function dbShell(p: DockerProject, script: string): Promise<string> {
  const r = await compose(p, ['exec', '--no-TTY', 'api-db', 'sh', '-c', script]);
  if (r.code !== 0) throw new Error(`${script} in api-db failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

/** What infra/docker-compose.yml interpolates for this project (the standby's port where the project sets one). */
export function composeVars(p: DockerProject): Record<string, string> {
  return {
    ...IMAGES_ENV,
    COMPOSE_PROJECT_NAME: p.name,
    ENV_DB_PORT: String(p.port),
    ENV_API_PORT: p.env.ENV_API_PORT ?? '0',
    DB_SECRETS_DIR: p.secretsDir,
    DB_SSL_DIR: p.sslDir,
    DB_MIGRATIONS_DIR: p.migrationsDir,
    ...(p.env.DB_REPLICA_PORT ? { DB_REPLICA_PORT: p.env.DB_REPLICA_PORT } : {}),
  };
}

/** `docker` itself (not compose), failing the test with its output when it exits non-zero. */
export async function docker(args: string[], opts: { input?: string; nothrow?: boolean } = {}): Promise<CliResult> {
  const r = await run('docker', args, {}, opts);
  if (r.code !== 0 && !opts.nothrow) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r;
}

/** The id of the project's container for `service` ('' when there is none). */
export async function containerId(p: DockerProject, service: string): Promise<string> {
  // With the app profile, so that `api` is a service Compose knows.
  return (await compose(p, ['--profile', 'app', 'ps', '--all', '--quiet', service])).stdout.trim().split('\n')[0] ?? '';
}

/** Secrets, certificates and a running, provisioned api-db (and, with `migrate`, `db:migrate`). */
export async function startDockerProject(p: DockerProject, opts: { migrate?: boolean } = {}): Promise<void> {
  await ok(['db:secrets'], p.env);
  await ok(['db:secure'], p.env);
  await ok(['db:up'], p.env);
  if (opts.migrate) await ok(['db:migrate'], p.env);
}

/**
 * Removes everything the project made on the engine (containers, network, volume, the api image) and
 * its files, the services of `profiles` too (`down` passes over a profile it is not given). Safe
 * after a failure, and never touches another project.
 */
export async function removeDockerProject(p: DockerProject | undefined, profiles: string[] = []): Promise<void> {
  if (!p) return;
  const enabled = ['app', ...profiles].flatMap((n) => ['--profile', n]);
  await compose(p, [...enabled, 'down', '--volumes', '--remove-orphans', '--rmi', 'local', '--timeout', '5']).catch(() => undefined);
  await fs.rm(p.dir, { recursive: true, force: true });
}

export { cli, ok, run };

/** What `docker inspect` says of a container: its state, host PID, health and restarts so far. */
export interface ContainerState {
  /** created, running, restarting, exited, ... */
  status: string;
  /** The host PID of the container's main process (0 while it is not running). */
  pid: number;
  /** starting, healthy, unhealthy, or '' without a healthcheck. */
  health: string;
  /** How many times the restart policy restarted it. */
  restarts: number;
  startedAt: string;
}

export async function inspectContainer(id: string): Promise<ContainerState> {
  const j = JSON.parse((await docker(['inspect', '--format', '{{json .}}', id])).stdout);
  return {
    status: j.State.Status,
    pid: j.State.Pid,
    health: j.State.Health?.Status ?? '',
    restarts: j.RestartCount,
    startedAt: j.State.StartedAt,
  };
}

/**
 * Polls `probe` every half second until it returns a value other than undefined or false, and fails
 * after `ms` naming what was awaited and the probe's last error: a bound against hangs, not a timing check.
 */
export async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  let last = '';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
      last = '';
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000}s${last ? ` (last error: ${last})` : ''}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * The usual set-up of a real-engine suite: before it, a project with these migrations (the
 * checkout's first without), its secrets, certificates and a running api-db (ctx.p); after it, even
 * on failure, all of that removed. withStartedProject (project.ts) is the same on the native server.
 */
export function withStartedDockerProject<T extends { p?: DockerProject }>(s: Test<T>, migrations?: Record<string, string>): void {
  setUp(s, async (ctx) => {
    ctx.p = await makeDockerProject({ migrations });
    await startDockerProject(ctx.p);
  });
  s.after(async (ctx) => {
    await removeDockerProject(ctx.p);
  });
}

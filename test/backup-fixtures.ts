// Shared by the backup, retention, guard and seed tests (not a test file itself).
import { existsSync, readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { withClient } from '@dbkit/core/pg';
import { nativePaths } from '@dbkit/core/runtime/native';
import { CLI, makeProject, ownerTarget, readSecretFile, run, type CliResult, type Project } from './setup/project.ts';

/**
 * Debian's own server and client binaries, whose majors match, so pg_dump can dump the server.
 * The major is discovered (15 on Debian 12, 17 on Debian 13), never assumed.
 */
export function debianMajor(): number {
  const root = '/usr/lib/postgresql';
  const majors = (existsSync(root) ? readdirSync(root) : [])
    .filter((d) => /^\d+$/.test(d) && existsSync(path.join(root, d, 'bin/postgres')) && existsSync(path.join(root, d, 'bin/pg_dump')))
    .map(Number)
    .sort((a, b) => b - a);
  if (!majors.length) throw new Error('no PostgreSQL server and client binaries under /usr/lib/postgresql (apt-get install postgresql)');
  return majors[0];
}

export const debianBin = () => `/usr/lib/postgresql/${debianMajor()}/bin`;

/** A project on Debian's binaries, with its own backup folder. */
export async function backupProject(opts: { migrations?: Record<string, string>; embedded?: boolean } = {}): Promise<Project> {
  const p = await makeProject(opts.migrations ? { migrations: opts.migrations } : {});
  p.env.DB_BACKUP_DIR = path.join(p.dir, 'backups');
  if (!opts.embedded) p.env.PG_BIN_DIR = debianBin();
  return p;
}

/** The superuser on the native server's socket: for what the test sets up and inspects, never for the tool. */
export async function superuser(p: Project, database?: string) {
  return {
    host: nativePaths(p.nativeDir).run,
    port: p.port,
    user: await readSecretFile(p, 'postgres_user'),
    password: await readSecretFile(p, 'postgres_password'),
    database: database ?? (await readSecretFile(p, 'postgres_db')),
  };
}

export async function suQuery(p: Project, sql: string, database?: string): Promise<Record<string, unknown>[]> {
  return withClient(await superuser(p, database), async (c) => (await c.query(sql)).rows);
}

export async function ownerQuery(p: Project, sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  return withClient(await ownerTarget(p), async (c) => (await c.query(sql, params)).rows);
}

/** Finished backups (directories with a manifest) and anything else left in the backup folder. */
export async function backupDirState(p: Project): Promise<{ finished: string[]; other: string[] }> {
  const dir = p.env.DB_BACKUP_DIR;
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const finished: string[] = [];
  const other: string[] = [];
  for (const n of names) {
    if (n === 'audit.log') continue;
    const hasManifest = await fs.stat(path.join(dir, n, 'manifest.json')).then(() => true, () => false);
    (hasManifest && !n.startsWith('.') ? finished : other).push(n);
  }
  return { finished: finished.sort(), other: other.sort() };
}

/** The error line, the hint line, a non-zero exit, no stack trace. */
export function failsClearly(r: CliResult, what: RegExp, hint?: RegExp): void {
  assert.is.not(r.code, 0, `expected a failure\n${r.stdout}${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const err = lines.find((l) => l.startsWith('error: '));
  assert.ok(err, `no error line in:\n${r.stderr}`);
  assert.match(err!, what);
  const h = lines.find((l) => l.startsWith('hint: '));
  assert.ok(h, `no hint line in:\n${r.stderr}`);
  if (hint) assert.match(h!, hint);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
}

/** Runs the CLI as another user (to meet permissions root ignores), with no terminal. */
export function cliAs(uid: number, gid: number, args: string[], env: Record<string, string | undefined>): Promise<CliResult> {
  return run(process.execPath, [CLI, ...args], { HOME: '/tmp', ...env }, { cwd: '/', asUser: { uid, gid } });
}

/** Flips one byte in the middle of a file. */
export async function flipByte(file: string): Promise<void> {
  const buf = await fs.readFile(file);
  const i = Math.floor(buf.length / 2);
  buf[i] ^= 0xff;
  await fs.writeFile(file, buf);
}

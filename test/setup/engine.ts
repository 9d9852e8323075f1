// A running project's database as the tests see it (native or in api-db alike): queries as the
// schema owner, golang-migrate's rows, and the CLI as a child process to signal or wait on.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Client } from 'pg';
import { withClient } from '@dbkit/core/pg';
import { CLI, ownerTarget, ROOT, type CliResult, type Project } from './project.ts';

/** A query as the migration role (the owner of what migrations make), over verified TLS. */
export async function query<R extends Record<string, unknown> = Record<string, unknown>>(
  p: Project,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  return withClient(await ownerTarget(p), async (c: Client) => (await c.query<R>(sql, params)).rows);
}

/** golang-migrate's row(s), as numbers. */
export async function versionRows(p: Project): Promise<{ version: number; dirty: boolean }[]> {
  const rows = await query<{ version: string; dirty: boolean }>(p, 'SELECT version, dirty FROM schema_migrations');
  return rows.map((r) => ({ version: Number(r.version), dirty: r.dirty }));
}

export async function tableExists(p: Project, name: string): Promise<boolean> {
  return (await query<{ ok: boolean }>(p, 'SELECT to_regclass($1) IS NOT NULL AS ok', [name]))[0].ok;
}

/** Which of `names` exist as tables, in that order. */
export async function existingTables(p: Project, names: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const t of names) if (await tableExists(p, t)) out.push(t);
  return out;
}

export const output = (r: CliResult) => r.stdout + r.stderr;

/** The CLI as a child we can signal: what `cli()` runs, without waiting for it. */
export function spawnCli(args: string[], env: Record<string, string>): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, CI: 'true', NO_COLOR: '1', ...env },
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
  return { child, done };
}

/** Polls `fn` until it returns true; fails with `what` after `ms` (a bound on a hang, not a timing assertion). */
export async function until(what: string, ms: number, fn: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting for ${what}`);
}

import type { Ctx } from '../context.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { compose, composeEnv } from '../runtime/docker.ts';
import { UsageError, UserError } from '../errors.ts';
import { withClient } from '../pg.ts';
import { loadMigrations } from './files.ts';
import { migrate, type Command, type MigrateResult } from './runner.ts';

export interface RunOptions {
  /** See runAsOne in runner.ts. */
  singleTransaction?: boolean;
}

/** golang-migrate's CLI words for a command: what the db-migrate service is given. */
export function migrateArgs(cmd: Command): string[] {
  switch (cmd.kind) {
    case 'up': return cmd.n === undefined ? ['up'] : ['up', String(cmd.n)];
    case 'down': return ['down', cmd.n === 'all' ? '-all' : String(cmd.n)];
    case 'goto': return ['goto', String(cmd.version)];
    // Go's flag package reads a bare -1 as an unknown flag; `--` ends the flags, as golang-migrate's README shows.
    case 'force': return cmd.version < 0 ? ['force', '--', String(cmd.version)] : ['force', String(cmd.version)];
  }
}

/**
 * Runs a migration command on the runtime: through the db-migrate service for docker (golang-migrate
 * prints its own lines), with our runner for native. Returns the runner's result, or undefined for docker.
 */
export async function runMigrations(ctx: Ctx, rt: Runtime, cmd: Command, opts: RunOptions = {}): Promise<MigrateResult | undefined> {
  if (opts.singleTransaction && rt.name === 'docker') {
    // golang-migrate commits each file; it has no such mode, and docker migrations are its.
    throw new UsageError('--single-transaction needs the native runtime: golang-migrate, which migrates for docker, commits each file', 'run without --single-transaction');
  }
  // Validated before anything runs, on both runtimes. golang-migrate decides in its container what
  // to run, so every file is checked for it; our runner checks the files it will run once it knows.
  const migrations = loadMigrations(ctx.cfg.migrationsDir, { texts: rt.name === 'docker' ? 'all' : 'later' });
  if (rt.name === 'docker') {
    const r = await ctx.exec('docker', compose.migrate(ctx.cfg.composeFile, migrateArgs(cmd)), { cwd: ctx.cfg.root, env: composeEnv(ctx.cfg), interactive: true, nothrow: true });
    if (r.code !== 0) throw new UserError(`the db-migrate service exited with ${r.code}`, 'read its message above; for a dirty database: pnpm db:status');
    return undefined;
  }
  const t = await rt.target('migrator');
  return withClient({ ...t, applicationName: 'pg-deploy migrate' }, (c) => migrate(ctx, c, migrations, cmd, { lockTimeoutMs: ctx.cfg.lockTimeoutMs, singleTransaction: opts.singleTransaction }));
}

/** The summary line: golang-migrate's `no change` when there was nothing to do, else what moved and how long it took. */
export function describe(r: MigrateResult): string {
  if (!r.steps.length && r.from === r.to) return 'no change';
  const v = (x: number | null) => (x === null ? 'none' : String(x));
  const took = r.ms < 1000 ? `${Math.round(r.ms)} ms` : `${(r.ms / 1000).toFixed(2)} s`;
  const dir = r.steps[0]?.direction === 'down' ? 'rolled back' : 'applied';
  return r.steps.length
    ? `${dir} ${r.steps.length} migration${r.steps.length === 1 ? '' : 's'} in ${took} (version ${v(r.from)} -> ${v(r.to)})`
    : `version ${v(r.from)} -> ${v(r.to)}`;
}

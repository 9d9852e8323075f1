// What a command does from the current version: pure, no database.
import { UserError } from '../errors.ts';
import type { Migration, MigrationFile } from './files.ts';
import { forceCommand } from './state.ts';

export type Command =
  { kind: 'up'; n?: number } | { kind: 'down'; n: number | 'all' } | { kind: 'goto'; version: number } | { kind: 'force'; version: number };

export interface PlannedStep {
  m: Migration;
  dir: 'up' | 'down';
  after: number | null; // the version once done
}

export const fileOf = (s: PlannedStep): MigrationFile => (s.dir === 'up' ? s.m.up : s.m.down);

export function plan(migrations: readonly Migration[], current: number | null, cmd: Exclude<Command, { kind: 'force' }>): PlannedStep[] {
  const idx = current === null ? -1 : migrations.findIndex((m) => m.version === current);
  if (current !== null && idx < 0 && cmd.kind !== 'up') {
    throw new UserError(
      `the database is at version ${current}, which has no migration file`,
      `restore the missing files, or force a version that exists: ${forceCommand(migrations.at(-1)?.version ?? null)}`,
    );
  }
  const pending = migrations.filter((m) => current === null || m.version > current);
  const ups = (list: readonly Migration[]) => list.map((m) => ({ m, dir: 'up' as const, after: m.version }));
  const downs = (count: number) => {
    const out: PlannedStep[] = [];
    for (let i = idx; i >= 0 && out.length < count; i--)
      out.push({ m: migrations[i], dir: 'down', after: i > 0 ? migrations[i - 1].version : null });
    return out;
  };
  if (cmd.kind === 'up') return ups(cmd.n === undefined ? pending : pending.slice(0, cmd.n));
  if (cmd.kind === 'down') return downs(cmd.n === 'all' ? Infinity : cmd.n);
  const target = migrations.findIndex((m) => m.version === cmd.version);
  if (target < 0) throw new UserError(`no migration has version ${cmd.version}`, 'see the versions with: pnpm db:status');
  if (target > idx) return ups(migrations.slice(idx + 1, target + 1));
  return downs(idx - target);
}

/** The version `force` writes: one that has a file, or none for -1. */
export function forceTarget(migrations: readonly Migration[], version: number): number | null {
  if (version !== -1 && !migrations.some((m) => m.version === version)) {
    throw new UserError(`no migration has version ${version}`, 'force a version that exists (or -1 for none); see: pnpm db:status');
  }
  return version === -1 ? null : version;
}

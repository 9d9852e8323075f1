import { UsageError } from '../errors.ts';
import type { Command } from './plan.ts';

export function positiveInt(s: string, what: string): number {
  if (!/^[1-9][0-9]*$/.test(s)) throw new UsageError(`${what} must be a positive whole number, not "${s}"`);
  return Number(s);
}

/** A version for force and goto: a migration's number, or -1 (force only) for "none". */
export function versionArg(s: string | undefined): number {
  if (s === undefined || !/^(-1|[0-9]+)$/.test(s) || !Number.isSafeInteger(Number(s))) {
    throw new UsageError(
      `expected a migration version, got ${s === undefined ? 'nothing' : `"${s}"`}`,
      'see the versions with: pnpm db:status',
    );
  }
  return Number(s);
}

/** `db:migrate` words, golang-migrate's: up [N] | down N | down --all | goto V. */
export function parseCommand(words: readonly string[], all: boolean): Command {
  const [verb = 'up', arg, extra] = words;
  const usage = 'pnpm db:migrate [up [N] | down N | down --all | goto V]';
  if (extra !== undefined) throw new UsageError(`too many arguments: ${words.join(' ')}`, usage);
  if (all && verb !== 'down') throw new UsageError('--all goes with down', usage);
  switch (verb) {
    case 'up':
      return { kind: 'up', n: arg === undefined ? undefined : positiveInt(arg, 'N') };
    case 'down':
      if (all) {
        if (arg !== undefined) throw new UsageError('down takes N or --all, not both', usage);
        return { kind: 'down', n: 'all' };
      }
      if (arg === undefined) throw new UsageError('down needs a count (down 1) or --all', usage);
      return { kind: 'down', n: positiveInt(arg, 'N') };
    case 'goto': {
      const v = versionArg(arg);
      if (v < 0) throw new UsageError('goto needs a migration version', usage);
      return { kind: 'goto', version: v };
    }
    default:
      throw new UsageError(`unknown migrate command "${verb}"`, usage);
  }
}

/** golang-migrate's CLI words for a command: what the db-migrate service is given. */
export function migrateArgs(cmd: Command): string[] {
  switch (cmd.kind) {
    case 'up':
      return cmd.n === undefined ? ['up'] : ['up', String(cmd.n)];
    case 'down':
      return ['down', cmd.n === 'all' ? '-all' : String(cmd.n)];
    case 'goto':
      return ['goto', String(cmd.version)];
    // Go's flag package reads a bare -1 as an unknown flag; `--` ends the flags, as golang-migrate's README shows.
    case 'force':
      return cmd.version < 0 ? ['force', '--', String(cmd.version)] : ['force', String(cmd.version)];
  }
}

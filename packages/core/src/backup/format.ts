import path from 'node:path';
import type { Config } from '../config.ts';
import { UsageError } from '../errors.ts';
import { DUMP, DUMP_DIR, type Manifest } from './store.ts';
import { MAX_JOBS, jobsOf, kindOf, type DumpKind } from './kinds.ts';
import type { PgToolIo } from '../runtime/tools.ts';

export interface DumpFormat {
  kind: DumpKind;
  jobs: number; // always 1 for custom
}

/** `--jobs N`: 1 to MAX_JOBS, or a usage error. */
export function parseJobs(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = jobsOf(raw);
  if (n === undefined)
    throw new UsageError(
      `--jobs must be a whole number from 1 to ${MAX_JOBS}, not "${raw}"`,
      'give the number of parallel processes, e.g. --jobs 4',
    );
  return n;
}

/** --format and --jobs over DB_BACKUP_FORMAT and DB_BACKUP_JOBS; --jobs without dir format is refused, not ignored. */
export function chosenFormat(
  cfg: Pick<Config, 'backupFormat' | 'backupJobs'>,
  format: string | undefined,
  jobs: string | undefined,
): DumpFormat {
  const kind = format === undefined ? cfg.backupFormat : kindOf(format);
  if (!kind) {
    throw new UsageError(
      `--format ${format} is not a backup format`,
      'use --format custom (one file, the default) or --format dir (a file per table, dumped in parallel with --jobs N)',
    );
  }
  const n = parseJobs(jobs);
  if (n !== undefined && kind === 'custom') {
    throw new UsageError(
      '--jobs goes with --format dir: a custom-format dump is one file written by one process',
      'add --format dir (pnpm db:backup --format dir --jobs N), or drop --jobs',
    );
  }
  return kind === 'dir' ? { kind, jobs: n ?? cfg.backupJobs } : { kind, jobs: 1 };
}

export const dumpKind = (m: Manifest): DumpKind => (m.dump.kind === 'dir' ? 'dir' : 'custom');

/** How many pg_restore processes restore a backup: --jobs (dir format only), else what its dump used. */
export function restoreJobs(m: Manifest, jobs: number | undefined): number {
  if (m.dump.kind !== 'dir') {
    if (jobs !== undefined)
      throw new UsageError(
        `--jobs goes with dir-format backups; ${m.name} is one custom-format file, restored by one process`,
        'drop --jobs',
      );
    return 1;
  }
  return jobs ?? m.dump.jobs ?? 1;
}

export function dumpArgs(f: DumpFormat, snapshot: string, database: string): string[] {
  const format = f.kind === 'dir' ? ['--format=directory', `--jobs=${f.jobs}`] : ['--format=custom'];
  return [...format, '--no-password', `--snapshot=${snapshot}`, database];
}

export function dumpOutput(kind: DumpKind, dir: string): PgToolIo {
  return kind === 'dir' ? { outDir: path.join(dir, DUMP_DIR) } : { out: path.join(dir, DUMP) };
}

/** pg_restore's arguments; --jobs excludes --single-transaction, and the new database it fills is dropped on failure anyway. */
export function restoreArgs(jobs: number, database: string): string[] {
  return ['--exit-on-error', ...(jobs > 1 ? [`--jobs=${jobs}`] : ['--single-transaction']), '--no-password', `--dbname=${database}`];
}

export function restoreInput(m: Manifest, dir: string): PgToolIo {
  return dumpKind(m) === 'dir' ? { inDir: path.join(dir, DUMP_DIR) } : { in: path.join(dir, DUMP) };
}

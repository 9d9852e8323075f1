import os from 'node:os';

// The settings' vocabulary of backups, with no imports of the tool's own: config.ts reads it to
// validate DB_BACKUP_FORMAT and DB_BACKUP_JOBS without depending on how backups are made.

/**
 * How pg_dump writes the database: `custom`, one file written by one process (the default, and
 * what streams out of a container as it is); or `dir`, a directory with one file per table, which
 * pg_dump writes and pg_restore reads with several processes at once: for large databases.
 */
export type DumpKind = 'custom' | 'dir';

/** Each job is one more session on the server, so a typo such as --jobs 400 is refused. */
export const MAX_JOBS = 64;

/** DB_BACKUP_JOBS's default: the CPUs, at most 4, so a backup never takes the whole server. */
export const defaultJobs = (): number => Math.min(4, os.availableParallelism());

export function kindOf(raw: string): DumpKind | undefined {
  return raw === 'custom' || raw === 'dir' ? raw : undefined;
}

export function jobsOf(raw: string): number | undefined {
  return /^[1-9][0-9]*$/.test(raw) && Number(raw) <= MAX_JOBS ? Number(raw) : undefined;
}

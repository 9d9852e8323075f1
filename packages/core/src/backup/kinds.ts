import os from 'node:os';

// Backup settings' vocabulary with no imports of ours, so config.ts can validate without loading backups.

/** `custom`: one file from one process (the default); `dir`: a file per table, written and read in parallel. */
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

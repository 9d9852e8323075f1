import type { FileSum } from './store.ts';

// A physical backup is one directory in DB_BACKUP_DIR, as a logical one is, with pg_basebackup's tar
// files and its backup_manifest, and our manifest.json (kind "physical": the logical backups' code
// never takes it for one of theirs, whose manifests are format 1).

export const BASE_TAR = 'base.tar';
export const WAL_TAR = 'pg_wal.tar';
export const PG_MANIFEST = 'backup_manifest';

export interface PhysicalManifest {
  format: 2;
  kind: 'physical';
  name: string;
  /** Before pg_basebackup started and after it ended, by this machine's clock: the backup is consistent from finishedAt on. */
  createdAt: string;
  finishedAt: string;
  runtime: string;
  serverVersion: string;
  timeline: number;
  startLsn: string;
  endLsn: string;
  segmentBytes: number;
  startSegment: string;
  files: FileSum[];
  ms: number;
}

export interface PhysicalBackup {
  dir: string;
  manifest: PhysicalManifest;
}

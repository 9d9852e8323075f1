import { UserError } from '../errors.ts';
import type { PhysicalBackup } from './physical-layout.ts';
import type { ArchiveFile } from './wal.ts';

// What point-in-time recovery needs of the place the server runs, beyond the rest of the Runtime
// interface: the WAL archive, and the data directory a recovery replaces. A runtime offers it as
// `rt.pitr` (native: backup/wal-native.ts and runtime/native-pitr.ts; docker: runtime/docker-pitr.ts;
// swarm: runtime/swarm-pitr.ts); one without it is refused in one line.

/** The archive the server's archive_command fills (wal-archive.sh), as the tool reads and prunes it. */
export interface WalArchive {
  /** Where it is, for people: a host folder, or a volume and the folder in it. */
  where(): Promise<string>;
  /** Throws unless the running server archives here (a server started before archiving was set up does not). */
  check(settings: { archive_mode: string; archive_command: string }): Promise<void>;
  /** Makes the folder, so the script starts keeping segments (it keeps nothing before); says where. */
  arm(): Promise<string>;
  /** Every file in it (segments, history files, the script's temporary copies); none before it is armed. */
  files(): Promise<ArchiveFile[]>;
  /** Removes these files (names from files()). */
  remove(names: readonly string[]): Promise<void>;
  /** The restore_command of a recovery from it, as the recovering server runs it. */
  restoreCommand(): Promise<string>;
}

/** The steps of one recovery that differ between runtimes; pitr.ts's recoverTo runs them in order. */
export interface DataSwap {
  /** Stops the server (it runs). */
  stop(): Promise<void>;
  /** Moves the data directory aside, whole; says whether there was one. */
  setAside(): Promise<boolean>;
  /** A new data directory from the base backup's tars, with these lines added to postgresql.auto.conf and recovery.signal. */
  restore(base: PhysicalBackup, settings: readonly string[]): Promise<void>;
  /** Starts the server on it (recovery, then promotion); nothing else (db:up's provisioning comes after). */
  start(): Promise<void>;
  /** Why the server started for recovery has failed, or undefined while it may still come up. */
  failed(): Promise<string | undefined>;
  /** The server's log since start(): where the recovery stopped, the new timeline. */
  log(): Promise<string>;
  /** Where people read the server log. */
  logHint: string;
  /** Removes the data set aside: the recovery succeeded. */
  dropAside(): Promise<void>;
  /**
   * Whether the data set aside exists. Needed to finish or roll back a recovery another (killed)
   * process ran (`Pitr.swap(pid)`); without it, such a recovery is only reported.
   */
  hasAside?(): Promise<boolean>;
  /** Stops the server if it runs and puts the data set aside back (or none, if there was none). */
  putBack(hadData: boolean): Promise<void>;
}

/** Point-in-time recovery on a runtime: `Runtime.pitr`. */
export interface Pitr {
  archive: WalArchive;
  /**
   * The steps of one recovery (fresh state: set-aside names, log marks), run by this process, or by
   * process `pid` (a killed one, whose recovery db:up and db:restore finish or roll back): the names
   * it sets the old data aside under carry that pid.
   */
  swap(pid?: number): DataSwap;
}

/** The runtime's point-in-time recovery, or one clear line where it has none. */
export function pitrOf(rt: { label: string; pitr?: Pitr }): Pitr {
  if (rt.pitr) return rt.pitr;
  throw new UserError(
    `physical backups and point-in-time recovery are not available on this target (${rt.label}) yet`,
    'use the native runtime or Docker Compose (DB_TARGET=compose), or logical backups: pnpm db:backup / pnpm db:restore',
  );
}

import type { RuntimeName } from '../config.ts';
import type { Target } from '../pg.ts';
import type { Admin } from '../provision.ts';
import type { PgTool, PgToolIo } from './tools.ts';
import type { RunResult } from '../exec.ts';
import type { Command } from '../migrations/plan.ts';
import type { MigrateOptions, MigrateResult } from '../migrations/runner.ts';
import type { Replica } from '../replica.ts';
import type { Pitr } from '../backup/pitr-runtime.ts';

export type LoginName = 'app' | 'migrator';

/** What a program handed our terminal needs to know of it. */
export interface Attached {
  /** stdin is a terminal; if not (a pipe, `< file.sql`), docker must not ask for a TTY. */
  stdinIsTty: boolean;
}

/** What `db:up` and friends need from a place PostgreSQL runs. Both runtimes implement all of it. */
export interface Runtime {
  /** For people and records (status, --json, backup manifests); never a branch: what differs is a method. */
  readonly label: RuntimeName;
  /** Starts the server (initialising it the first time), provisions it if anything changed, and returns once both logins succeed over TLS. */
  up(): Promise<{ initialised: boolean; provisioned: boolean }>;
  /** Stops the server (and a standby: `standby` says it ran); already stopped is not an error. */
  down(): Promise<{ wasRunning: boolean; standby?: boolean }>;
  /** Whether the server runs now. */
  running(): Promise<boolean>;
  logs(follow: boolean): Promise<void>;
  /** A shell (docker: bash in api-db; native: $SHELL with PG* set) with these arguments and our stdin; resolves to its exit status. */
  shell(args: readonly string[], io: Attached): Promise<number>;
  /** psql as the application role over verified TLS with these arguments and our stdin; resolves to its exit status. */
  psql(args: readonly string[], io: Attached): Promise<number>;
  /** Stops the server and deletes its data. */
  destroy(): Promise<void>;
  /** Whether there is data to lose while the server is stopped; a question that cannot be answered counts as yes. */
  hasData(): Promise<boolean>;
  /** Where the host reaches the server over verified TLS, as the application (default) or the migration role. */
  target(login?: LoginName): Promise<Target>;
  /** The superuser's channel, which never crosses TCP. */
  admin(): Promise<Admin>;
  /** Installs the current certificate and key where the server reads them and reloads it: open sessions survive. */
  reloadTls(): Promise<void>;
  /** Restarts what reads the application's secret (the compose `api` service) if it runs; says whether it did. */
  restartApp(): Promise<boolean>;
  /** Runs a client tool as the superuser on the server's socket, with host files for its I/O; the caller reads its exit status. */
  pgTool(tool: PgTool, args: readonly string[], io?: PgToolIo): Promise<RunResult>;
  /** Finds and checks the client tools ahead of the first pgTool call, overlapping other work. */
  prepareTools(): Promise<void>;
  /** Runs a migration command once its files are checked; native returns what moved, docker's golang-migrate prints it. */
  migrate(cmd: Command, opts?: Pick<MigrateOptions, 'singleTransaction'>): Promise<MigrateResult | undefined>;
  /** What `destroy` would remove, for confirmations and --dry-run. */
  describeData(): string;
  /** The hot standby (db:replica, db:promote), where this runtime has one. */
  replica?: Replica;
  /** WAL archiving, base backups and point-in-time recovery (db:backup --physical, db:restore --to-time), where this runtime has them. */
  pitr?: Pitr;
}

/** Where the host reaches the server, and the address the certificate names (`localhost` may resolve to ::1 first). */
export const LOOPBACK = '127.0.0.1';

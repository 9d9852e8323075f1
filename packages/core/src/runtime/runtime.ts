import type { Target } from '../pg.ts';
import type { Admin } from '../provision.ts';

export type LoginName = 'app' | 'migrator';

/** What `db:up` and friends need from a place PostgreSQL runs. Both runtimes implement all of it. */
export interface Runtime {
  readonly name: 'docker' | 'native';
  /** Starts the server (initialising it the first time) and returns once a TLS login succeeds. */
  up(): Promise<{ initialised: boolean }>;
  /** Stops the server; already stopped is not an error. */
  down(): Promise<{ wasRunning: boolean }>;
  /** Whether the server runs now. */
  running(): Promise<boolean>;
  logs(follow: boolean): Promise<void>;
  shell(): Promise<void>;
  psql(args: readonly string[]): Promise<void>;
  /** Stops the server and deletes its data. */
  destroy(): Promise<void>;
  /** Where the host reaches the server over verified TLS, as the application (default) or the migration role. */
  target(login?: LoginName): Promise<Target>;
  /** The superuser's channel, which never crosses TCP. */
  admin(): Promise<Admin>;
  /** Installs the current certificate and key where the server reads them and reloads it: open sessions survive. */
  reloadTls(): Promise<void>;
  /** Restarts what reads the application's secret (the compose `api` service) if it runs; says whether it did. */
  restartApp(): Promise<boolean>;
  /** What `destroy` would remove, for confirmations and --dry-run. */
  describeData(): string;
}

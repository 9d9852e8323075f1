import type { Config } from '../config.ts';
import { UsageError } from '../errors.ts';
import type { MigrateOptions } from '../migrations/runner.ts';
import { FENCE_FILE } from '../replica.ts';

export const DB_SERVICE = 'api-db';
export const MIGRATE_SERVICE = 'db-migrate';
/** The hot standby (db:replica), behind its own profile: `docker compose up` and db:up never start it. */
export const REPLICA_SERVICE = 'api-db-replica';
export const REPLICA_PROFILE = 'replica';

/** The base with the standby's profile, so Compose knows the service. */
const withReplica = (file: string) => ['compose', '-f', file, '--profile', REPLICA_PROFILE];

/** The `docker compose` argument arrays, as data. Services are addressed through Compose, never by container name. */
export const compose = {
  base: (file: string) => ['compose', '-f', file],
  up: (file: string, timeoutS: number) => [
    ...compose.base(file),
    'up',
    '--detach',
    '--wait',
    '--wait-timeout',
    String(timeoutS),
    DB_SERVICE,
  ],
  // The `app` and `replica` profiles too: a profile Compose is not told about is left running, with the network
  // (and, for destroy, the standby's volume). Neither needs the standby's secret files to exist.
  down: (file: string) => [...withReplica(file), '--profile', 'app', 'down'],
  destroy: (file: string) => [...withReplica(file), '--profile', 'app', 'down', '--volumes', '--remove-orphans'],
  ps: (file: string) => [...compose.base(file), 'ps', '--status', 'running', '--quiet', DB_SERVICE],
  // The last lines of a service's log, the standby's too, for the message when it would not start.
  lastLogs: (file: string, service: string, n: number) => [...withReplica(file), 'logs', '--no-log-prefix', '--tail', String(n), service],
  logs: (file: string, follow: boolean) => [...compose.base(file), 'logs', ...(follow ? ['--follow'] : []), '--tail', '100', DB_SERVICE],
  // No TTY without a terminal on stdin (a pipe, `< file.sql`), or the input never arrives.
  shell: (file: string, args: readonly string[] = [], stdinIsTty = true) => [
    ...compose.base(file),
    'exec',
    ...(stdinIsTty ? [] : ['--no-TTY']),
    DB_SERVICE,
    'bash',
    ...args,
  ],
  // The container's scripts read the secrets there: none passes through our argv.
  psql: (file: string, args: readonly string[], stdinIsTty = true) => [
    ...compose.base(file),
    'exec',
    ...(stdinIsTty ? [] : ['--no-TTY']),
    DB_SERVICE,
    '/usr/local/bin/db-psql',
    ...args,
  ],
  adminSql: (file: string, database: string) => [
    ...compose.base(file),
    'exec',
    '--no-TTY',
    DB_SERVICE,
    '/usr/local/bin/db-admin-sql',
    database,
  ],
  installTls: (file: string) => [...compose.base(file), 'exec', '--no-TTY', DB_SERVICE, '/usr/local/bin/db-start', '--install-tls-only'],
  appRunning: (file: string) => [...compose.base(file), 'ps', '--status', 'running', '--quiet', 'api'],
  // A file secret is a bind mount resolved when the container is made: recreate it to read the new file.
  recreateApp: (file: string) => [...compose.base(file), 'up', '--detach', '--no-deps', '--force-recreate', 'api'],
  migrate: (file: string, args: readonly string[]) => [...compose.base(file), 'run', '--rm', '--no-deps', MIGRATE_SERVICE, ...args],
  // --no-deps: the standby never starts api-db; during a failover that would bring back the old primary.
  replicaUp: (file: string, timeoutS: number) => [
    ...withReplica(file),
    'up',
    '--detach',
    '--no-deps',
    '--wait',
    '--wait-timeout',
    String(timeoutS),
    REPLICA_SERVICE,
  ],
  replicaPs: (file: string) => [...withReplica(file), 'ps', '--status', 'running', '--quiet', REPLICA_SERVICE],
  replicaStop: (file: string) => [...withReplica(file), 'stop', REPLICA_SERVICE],
  replicaAdminSql: (file: string, database: string) => [
    ...withReplica(file),
    'exec',
    '--no-TTY',
    REPLICA_SERVICE,
    '/usr/local/bin/db-admin-sql',
    database,
  ],
  // A deliberate stop: the restart policy (unless-stopped) leaves it down, a pending restart after a crash included.
  stop: (file: string) => [...compose.base(file), 'stop', DB_SERVICE],
  // Point-in-time recovery (docker-pitr.ts): api-db started alone, its whole state, its log since a moment.
  startOnly: (file: string) => [...compose.base(file), 'up', '--detach', '--no-deps', DB_SERVICE],
  psAll: (file: string) => [...compose.base(file), 'ps', '--all', '--quiet', DB_SERVICE],
  logsSince: (file: string, since: string) => [...compose.base(file), 'logs', '--no-log-prefix', '--since', since, DB_SERVICE],
  // A root sh script in api-db while it runs, or in a one-off container of it (its volumes, no ports, removed after).
  execScript: (file: string, script: string, name: string, args: readonly string[]) => [
    ...compose.base(file),
    'exec',
    '--no-TTY',
    DB_SERVICE,
    'sh',
    '-c',
    script,
    name,
    ...args,
  ],
  runScript: (file: string, script: string, name: string, args: readonly string[], user?: string) => [
    ...compose.base(file),
    'run',
    '--rm',
    '--no-deps',
    '--no-TTY',
    ...(user ? ['--user', user] : []),
    '--entrypoint',
    'sh',
    DB_SERVICE,
    '-c',
    script,
    name,
    ...args,
  ],
  // The fence, in the old primary's data directory, written by a one-off container of api-db as the server's user.
  fence: (file: string, text: string) =>
    compose.runScript(file, `printf '%s\\n' "$1" >"$PGDATA/${FENCE_FILE}"`, 'db-fence', [text], 'postgres'),
  // The healthcheck's recent outputs, for the message when `up --wait` gives up.
  health: (containerId: string) => ['inspect', '--format', '{{json .State.Health}}', containerId],
};

/** The volume of infra/docker-compose.yml that holds api-db's data directory. */
export const DATA_VOLUME = 'pg_data';
/** The standby's data directory. */
export const REPLICA_VOLUME = 'pg_replica_data';

/** The `docker` argument arrays that are not Compose commands. */
export const engine = {
  composeVersion: () => ['compose', 'version', '--short'],
  /** For the `docker-compose` program: v1, or a v2 the docker CLI does not find as its plugin. */
  standaloneComposeVersion: () => ['version', '--short'],
  serverVersion: () => ['info', '--format', '{{.ServerVersion}}'],
  // By Compose's labels: the project's data volume whatever name Compose gave it, and no other project's.
  dataVolume: (project: string, volume: string = DATA_VOLUME) => [
    'volume',
    'ls',
    '--quiet',
    '--filter',
    `label=com.docker.compose.project=${project}`,
    '--filter',
    `label=com.docker.compose.volume=${volume}`,
  ],
};

/** What infra/docker-compose.yml interpolates, as absolute paths, so the containers use the host's secrets, certificates and migrations. */
export function composeEnv(
  cfg: Pick<Config, 'port' | 'secretsDir' | 'sslDir' | 'migrationsDir' | 'composeProject' | 'images'> &
    Partial<Pick<Config, 'replicaPort'>>,
): Record<string, string> {
  return {
    COMPOSE_PROJECT_NAME: cfg.composeProject,
    ENV_DB_PORT: String(cfg.port),
    DB_REPLICA_PORT: String(cfg.replicaPort ?? cfg.port + 1),
    DB_SECRETS_DIR: cfg.secretsDir,
    DB_SSL_DIR: cfg.sslDir,
    DB_MIGRATIONS_DIR: cfg.migrationsDir,
    DB_IMAGE: cfg.images.db,
    MIGRATE_IMAGE: cfg.images.migrate,
    NODE_IMAGE: cfg.images.node,
  };
}

/** golang-migrate, which migrates for docker and swarm, commits each file: --single-transaction is refused in one line. */
export function refuseSingleTransaction(opts: Pick<MigrateOptions, 'singleTransaction'>): void {
  if (opts.singleTransaction)
    throw new UsageError(
      '--single-transaction needs the native runtime: golang-migrate, which migrates for docker, commits each file',
      'run without --single-transaction',
    );
}

import type { Config } from '../config.ts';

export const DB_SERVICE = 'api-db';
export const MIGRATE_SERVICE = 'db-migrate';

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
  // The `app` profile too: a profile Compose is not told about is left running, with the network.
  down: (file: string) => [...compose.base(file), '--profile', 'app', 'down'],
  destroy: (file: string) => [...compose.base(file), '--profile', 'app', 'down', '--volumes', '--remove-orphans'],
  ps: (file: string) => [...compose.base(file), 'ps', '--status', 'running', '--quiet', DB_SERVICE],
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
  // Point-in-time recovery (docker-pitr.ts): api-db stopped and started alone, its whole state, its log since a moment.
  stop: (file: string) => [...compose.base(file), 'stop', DB_SERVICE],
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
  runScript: (file: string, script: string, name: string, args: readonly string[]) => [
    ...compose.base(file),
    'run',
    '--rm',
    '--no-deps',
    '--no-TTY',
    '--entrypoint',
    'sh',
    DB_SERVICE,
    '-c',
    script,
    name,
    ...args,
  ],
  // The healthcheck's recent outputs, for the message when `up --wait` gives up.
  health: (containerId: string) => ['inspect', '--format', '{{json .State.Health}}', containerId],
};

/** The volume of infra/docker-compose.yml that holds api-db's data directory. */
export const DATA_VOLUME = 'pg_data';

/** The `docker` argument arrays that are not Compose commands. */
export const engine = {
  composeVersion: () => ['compose', 'version', '--short'],
  /** For the `docker-compose` program: v1, or a v2 the docker CLI does not find as its plugin. */
  standaloneComposeVersion: () => ['version', '--short'],
  serverVersion: () => ['info', '--format', '{{.ServerVersion}}'],
  // By Compose's labels: the project's data volume whatever name Compose gave it, and no other project's.
  dataVolume: (project: string) => [
    'volume',
    'ls',
    '--quiet',
    '--filter',
    `label=com.docker.compose.project=${project}`,
    '--filter',
    `label=com.docker.compose.volume=${DATA_VOLUME}`,
  ],
};

/** What infra/docker-compose.yml interpolates, as absolute paths, so the containers use the host's secrets, certificates and migrations. */
export function composeEnv(
  cfg: Pick<Config, 'port' | 'secretsDir' | 'sslDir' | 'migrationsDir' | 'composeProject' | 'images'>,
): Record<string, string> {
  return {
    COMPOSE_PROJECT_NAME: cfg.composeProject,
    ENV_DB_PORT: String(cfg.port),
    DB_SECRETS_DIR: cfg.secretsDir,
    DB_SSL_DIR: cfg.sslDir,
    DB_MIGRATIONS_DIR: cfg.migrationsDir,
    DB_IMAGE: cfg.images.db,
    MIGRATE_IMAGE: cfg.images.migrate,
    NODE_IMAGE: cfg.images.node,
  };
}

import path from 'node:path';
import { UserError } from './errors.ts';
import { parseKeep, type BackupKeep } from './backup/retention.ts';
import { MAX_JOBS, defaultJobs, kindOf, type DumpKind } from './backup/kinds.ts';

export type RuntimeName = 'docker' | 'native';
/** Where the docker runtime deploys: one host with Compose, or a Swarm stack (real secrets, configs, one-shot migration job). */
export type TargetName = 'compose' | 'swarm';

export interface ComposeImages {
  db: string;
  migrate: string;
  node: string;
}

/** The official images, pinned: what a VPS runs. A private registry or a digest pin replaces them. */
export const OFFICIAL_IMAGES: ComposeImages = { db: 'postgres:16-alpine', migrate: 'migrate/migrate:v4.18.3', node: 'node:20-alpine' };

// Compose's own rule for project names.
const PROJECT_NAME = /^[a-z0-9][a-z0-9_-]*$/;
// A reference Docker accepts: [registry/]name[:tag][@digest], without spaces or shell characters.
const IMAGE_REF = /^[a-zA-Z0-9][a-zA-Z0-9._\-/:]*(@sha256:[0-9a-f]{64})?$/;

/** Every setting the tool reads, validated once at the entry point. Nothing below the entry point reads the environment itself. */
export interface Config {
  root: string;
  nodeEnv: string;
  runtime: RuntimeName | 'auto';
  /** DB_TARGET (or --target): compose (default) or swarm; swarm implies the docker runtime. */
  target: TargetName;
  /** Host port on 127.0.0.1 (ENV_DB_PORT, as in the guide). */
  port: number;
  tlsHostnames: string[];
  tlsDays: number;
  secretsDir: string;
  sslDir: string;
  migrationsDir: string;
  seedsDir: string;
  /** Backups (DB_BACKUP_DIR) and how many to keep (DB_BACKUP_KEEP, daily/weekly/monthly). */
  backupDir: string;
  backupKeep: BackupKeep;
  /** db:backup's format when --format is not given (DB_BACKUP_FORMAT), and pg_dump processes for dir format (DB_BACKUP_JOBS). */
  backupFormat: DumpKind;
  backupJobs: number;
  configDir: string;
  composeFile: string;
  /** Compose's project (COMPOSE_PROJECT_NAME, default pg-deploy): its containers, network and volume. */
  composeProject: string;
  /** The images infra/docker-compose.yml runs (DB_IMAGE, MIGRATE_IMAGE, NODE_IMAGE): the official pinned tags unless set. */
  images: ComposeImages;
  nativeDir: string;
  pgBinDir?: string;
  nativeUser: string;
  upTimeoutMs: number;
  /** How long a migration waits for another runner's advisory lock (DB_MIGRATE_LOCK_TIMEOUT). */
  lockTimeoutMs: number;
  /** Native runner: each statement's lock_timeout (0: the server's) and retries after one (DB_MIGRATE_STATEMENT_LOCK_*). */
  statementLockTimeoutMs: number;
  statementLockRetries: number;
  /** The native db:bash's shell (SHELL, default bash). */
  shell: string;
  /** Who ran sudo (SUDO_USER), for the audit log. */
  sudoUser?: string;
  /** The hot standby's host port on 127.0.0.1 (DB_REPLICA_PORT, default ENV_DB_PORT + 1). */
  replicaPort: number;
  /** DB_SYNC_REPLICA=on: a commit waits until the standby has it (no committed row lost on failover, slower writes). */
  syncReplica: boolean;
  /** Where the server archives its WAL for point-in-time recovery (DB_WAL_ARCHIVE_DIR, default <DB_BACKUP_DIR>/wal). */
  walArchiveDir: string;
}

// Names that say "secret" (not a bare KEY or *_KEY_FILE, often a path): .env files are committed plain text.
const SECRET_LIKE =
  /(PASSWORD|PASSWD|PASSPHRASE|_PASS|_PWD|SECRET|TOKEN|(^|_)(API|ACCESS|SECRET|PRIVATE|SIGNING|ENCRYPTION|MASTER|AUTH|CLIENT)_?KEY)$/i;
// Values that carry a password whatever the name: user:password@ URLs, password=..., ?password=...
const SECRET_VALUE = /^[a-z][a-z0-9+.-]*:\/\/[^/?#@\s]*:[^/?#@\s]+@|(^|\s)password\s*=\s*\S|[?&](password|pass|pwd)=[^&\s]/i;

/** Why a .env variable holds a secret, or undefined. */
function secretIn(key: string, value: string): string | undefined {
  if (value === '') return undefined;
  if (SECRET_LIKE.test(key)) return `${key} is set`;
  if (SECRET_VALUE.test(value)) return `${key} holds a password`;
  return undefined;
}

/** dotenv-flow's files under the real environment (which wins); a file holding a secret stops everything. */
export async function loadEnv(root: string, real: Record<string, string | undefined>): Promise<Record<string, string | undefined>> {
  const { listFiles, parse } = await import('dotenv-flow');
  const nodeEnv = real.NODE_ENV || 'development';
  const files = listFiles({ path: root, node_env: nodeEnv });
  const found: { what: string; key: string; file: string }[] = [];
  for (const f of files) {
    for (const [key, value] of Object.entries(parse(f) as Record<string, string>)) {
      const what = secretIn(key, value);
      if (what) found.push({ what, key, file: path.relative(root, f) });
    }
  }
  if (found.length) {
    const keys = [...new Set(found.map((x) => x.key))].join(', ');
    const where = [...new Set(found.map((x) => x.file))].join(', ');
    throw new UserError(
      `${found.map((x) => `${x.what} in a .env file (${x.file})`).join('; ')}: secrets must not live in .env files`,
      `remove ${keys} from ${where}; the database's passwords live in database/infra/secrets (pnpm db:secrets), other secrets in the real environment or a secret store`,
    );
  }
  return { ...(files.length ? (parse(files) as Record<string, string>) : {}), ...real };
}

function int(env: Record<string, string | undefined>, key: string, def: number, min: number, max: number): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return def;
  // Digits only: Number() would also read 1e3, 0x10, 1_000 or " 80 " as whole numbers.
  const n = /^[0-9]+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UserError(`${key}=${raw} is not a whole number from ${min} to ${max}`, `fix ${key} in .env.local or the environment`);
  }
  return n;
}

export function parseConfig(root: string, env: Record<string, string | undefined>): Config {
  const dir = (key: string, def: string) => path.resolve(root, env[key] || def);
  const runtime = (env.DB_RUNTIME || 'auto') as Config['runtime'];
  if (!['docker', 'native', 'auto'].includes(runtime)) {
    throw new UserError(
      `DB_RUNTIME=${runtime} is not one of docker, native, auto`,
      'set DB_RUNTIME to docker, native or auto (the default)',
    );
  }
  const target = (env.DB_TARGET || 'compose') as TargetName;
  if (!['compose', 'swarm'].includes(target)) {
    throw new UserError(`DB_TARGET=${target} is not one of compose, swarm`, 'set DB_TARGET to compose (the default) or swarm');
  }
  if (target === 'swarm' && runtime === 'native') {
    throw new UserError(
      'DB_TARGET=swarm needs the docker runtime, and DB_RUNTIME=native',
      'unset DB_RUNTIME (or set it to docker), or unset DB_TARGET',
    );
  }
  const sync = (env.DB_SYNC_REPLICA || 'off').toLowerCase();
  if (!['on', 'off'].includes(sync)) {
    throw new UserError(
      `DB_SYNC_REPLICA=${env.DB_SYNC_REPLICA} is not on or off`,
      'set DB_SYNC_REPLICA to on (synchronous commit to the standby) or off (the default)',
    );
  }
  const port = int(env, 'ENV_DB_PORT', 5432, 1, 65535);
  const backupDir = dir('DB_BACKUP_DIR', 'backups');
  const backupFormat = kindOf(env.DB_BACKUP_FORMAT || 'custom');
  if (!backupFormat) {
    throw new UserError(
      `DB_BACKUP_FORMAT=${env.DB_BACKUP_FORMAT} is not one of custom, dir`,
      'set DB_BACKUP_FORMAT to custom (one file, the default) or dir (a file per table, dumped in parallel)',
    );
  }
  const composeProject = env.COMPOSE_PROJECT_NAME || 'pg-deploy';
  if (!PROJECT_NAME.test(composeProject)) {
    throw new UserError(
      `COMPOSE_PROJECT_NAME=${composeProject} is not a valid Compose project name`,
      'use lower-case letters, digits, dashes and underscores, starting with a letter or digit (default pg-deploy)',
    );
  }
  const image = (key: string, def: string) => {
    const ref = env[key] || def;
    if (!IMAGE_REF.test(ref))
      throw new UserError(`${key}=${ref} is not an image reference`, `set ${key} to a reference such as ${def} (or unset it)`);
    return ref;
  };
  const nativeUser = env.DB_NATIVE_USER || 'postgres';
  if (nativeUser === 'root') {
    throw new UserError(
      'DB_NATIVE_USER=root: PostgreSQL refuses to run as root (initdb and postgres stop with "cannot be run as root")',
      'unset DB_NATIVE_USER to run the server as postgres, or set it to another unprivileged user; pg-deploy may itself run as root and starts the server as that user',
    );
  }
  if (!/^[a-z_][a-z0-9_.-]*$/i.test(nativeUser)) {
    throw new UserError(
      `DB_NATIVE_USER=${nativeUser} is not a user name`,
      'set DB_NATIVE_USER to the name of an unprivileged user (default postgres)',
    );
  }
  const hostnames = (env.DB_TLS_HOSTNAMES || '')
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  for (const h of hostnames) {
    if (!/^(\*\.)?[a-zA-Z0-9.-]+$|^[0-9a-fA-F:.]+$/.test(h)) {
      throw new UserError(
        `DB_TLS_HOSTNAMES holds "${h}", which is not a host name or IP address`,
        'list host names separated by commas, e.g. DB_TLS_HOSTNAMES=db.example.com,10.0.0.5',
      );
    }
  }
  return {
    root,
    nodeEnv: env.NODE_ENV || 'development',
    runtime,
    target,
    port,
    tlsHostnames: hostnames,
    tlsDays: int(env, 'DB_TLS_DAYS', 365, 1, 3650),
    secretsDir: dir('DB_SECRETS_DIR', 'database/infra/secrets'),
    sslDir: dir('DB_SSL_DIR', 'database/infra/ssl'),
    migrationsDir: dir('DB_MIGRATIONS_DIR', 'database/migrations'),
    seedsDir: dir('DB_SEEDS_DIR', 'database/seeds'),
    backupDir,
    backupKeep: parseKeep(env.DB_BACKUP_KEEP),
    backupFormat,
    backupJobs: int(env, 'DB_BACKUP_JOBS', defaultJobs(), 1, MAX_JOBS),
    configDir: path.resolve(root, 'database/infra/config'),
    composeFile: path.resolve(root, 'infra/docker-compose.yml'),
    composeProject,
    images: {
      db: image('DB_IMAGE', OFFICIAL_IMAGES.db),
      migrate: image('MIGRATE_IMAGE', OFFICIAL_IMAGES.migrate),
      node: image('NODE_IMAGE', OFFICIAL_IMAGES.node),
    },
    nativeDir: dir('DB_NATIVE_DIR', '.data'),
    pgBinDir: env.PG_BIN_DIR ? path.resolve(root, env.PG_BIN_DIR) : undefined,
    nativeUser,
    upTimeoutMs: int(env, 'DB_UP_TIMEOUT', 60, 1, 3600) * 1000,
    lockTimeoutMs: int(env, 'DB_MIGRATE_LOCK_TIMEOUT', 15, 0, 3600) * 1000,
    statementLockTimeoutMs: int(env, 'DB_MIGRATE_STATEMENT_LOCK_TIMEOUT', 3, 0, 3600) * 1000,
    statementLockRetries: int(env, 'DB_MIGRATE_STATEMENT_LOCK_RETRIES', 3, 0, 100),
    shell: env.SHELL || 'bash',
    sudoUser: env.SUDO_USER || undefined,
    replicaPort: int(env, 'DB_REPLICA_PORT', port === 65535 ? 65534 : port + 1, 1, 65535),
    syncReplica: sync === 'on',
    walArchiveDir: env.DB_WAL_ARCHIVE_DIR ? path.resolve(root, env.DB_WAL_ARCHIVE_DIR) : path.join(backupDir, 'wal'),
  };
}

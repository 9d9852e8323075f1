import path from 'node:path';
import { UserError } from './errors.ts';
import { parseKeep, type BackupKeep } from './backup/retention.ts';
import { MAX_JOBS, defaultJobs, kindOf, type DumpKind } from './backup/format.ts';

export type RuntimeName = 'docker' | 'native';

export interface ComposeImages {
  db: string;
  migrate: string;
  node: string;
}

/** The official images, pinned: what a VPS runs. A private registry or a digest pin replaces them. */
export const OFFICIAL_IMAGES: ComposeImages = { db: 'postgres:16-alpine', migrate: 'migrate/migrate:v4.18.3', node: 'node:20-alpine' };

// Compose's own rule for project names: lower-case letters, digits, dashes and underscores,
// starting with a letter or digit.
const PROJECT_NAME = /^[a-z0-9][a-z0-9_-]*$/;
// A reference Docker accepts: [registry/]name[:tag][@digest], without spaces or shell characters.
const IMAGE_REF = /^[a-zA-Z0-9][a-zA-Z0-9._\-/:]*(@sha256:[0-9a-f]{64})?$/;

/** Every setting the tool reads, validated once at the entry point. Nothing below the entry point reads the environment itself. */
export interface Config {
  root: string;
  nodeEnv: string;
  runtime: RuntimeName | 'auto';
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
  lockTimeoutMs: number;
  /** The environment the processes we start inherit (dotenv values under the real environment). */
  env: Record<string, string | undefined>;
}

// A password has no business in a committed, plain-text .env file: secrets live in database/infra/secrets.
const SECRET_LIKE = /(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|_PASS)$/i;

/**
 * Loads `.env`, `.env.local`, `.env.<NODE_ENV>`, `.env.<NODE_ENV>.local` (dotenv-flow's order, later
 * wins) under the real environment (which wins over every file).
 */
export async function loadEnv(root: string, real: Record<string, string | undefined>): Promise<Record<string, string | undefined>> {
  const { listFiles, parse } = await import('dotenv-flow');
  const nodeEnv = real.NODE_ENV || 'development';
  const files = listFiles({ path: root, node_env: nodeEnv });
  const fromFiles = files.length ? (parse(files) as Record<string, string>) : {};
  for (const [key, value] of Object.entries(fromFiles)) {
    if (SECRET_LIKE.test(key) && value !== '') {
      throw new UserError(
        `${key} is set in a .env file; secrets must not live in .env files`,
        `remove ${key} from ${files.map((f) => path.relative(root, f)).join(', ')} and keep it in database/infra/secrets (pnpm db:secrets)`,
      );
    }
  }
  return { ...fromFiles, ...real };
}

function int(env: Record<string, string | undefined>, key: string, def: number, min: number, max: number): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UserError(`${key}=${raw} is not a whole number from ${min} to ${max}`, `fix ${key} in .env.local or the environment`);
  }
  return n;
}

export function parseConfig(root: string, env: Record<string, string | undefined>): Config {
  const dir = (key: string, def: string) => path.resolve(root, env[key] || def);
  const runtime = (env.DB_RUNTIME || 'auto') as Config['runtime'];
  if (!['docker', 'native', 'auto'].includes(runtime)) {
    throw new UserError(`DB_RUNTIME=${runtime} is not one of docker, native, auto`, 'set DB_RUNTIME to docker, native or auto (the default)');
  }
  const backupFormat = kindOf(env.DB_BACKUP_FORMAT || 'custom');
  if (!backupFormat) {
    throw new UserError(`DB_BACKUP_FORMAT=${env.DB_BACKUP_FORMAT} is not one of custom, dir`, 'set DB_BACKUP_FORMAT to custom (one file, the default) or dir (a file per table, dumped in parallel)');
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
    if (!IMAGE_REF.test(ref)) throw new UserError(`${key}=${ref} is not an image reference`, `set ${key} to a reference such as ${def} (or unset it)`);
    return ref;
  };
  const hostnames = (env.DB_TLS_HOSTNAMES || '').split(',').map((h) => h.trim()).filter(Boolean);
  for (const h of hostnames) {
    if (!/^(\*\.)?[a-zA-Z0-9.-]+$|^[0-9a-fA-F:.]+$/.test(h)) {
      throw new UserError(`DB_TLS_HOSTNAMES holds "${h}", which is not a host name or IP address`, 'list host names separated by commas, e.g. DB_TLS_HOSTNAMES=db.example.com,10.0.0.5');
    }
  }
  return {
    root,
    nodeEnv: env.NODE_ENV || 'development',
    runtime,
    port: int(env, 'ENV_DB_PORT', 5432, 1, 65535),
    tlsHostnames: hostnames,
    tlsDays: int(env, 'DB_TLS_DAYS', 365, 1, 3650),
    secretsDir: dir('DB_SECRETS_DIR', 'database/infra/secrets'),
    sslDir: dir('DB_SSL_DIR', 'database/infra/ssl'),
    migrationsDir: dir('DB_MIGRATIONS_DIR', 'database/migrations'),
    seedsDir: dir('DB_SEEDS_DIR', 'database/seeds'),
    backupDir: dir('DB_BACKUP_DIR', 'backups'),
    backupKeep: parseKeep(env.DB_BACKUP_KEEP),
    backupFormat,
    backupJobs: int(env, 'DB_BACKUP_JOBS', defaultJobs(), 1, MAX_JOBS),
    configDir: path.resolve(root, 'database/infra/config'),
    composeFile: path.resolve(root, 'infra/docker-compose.yml'),
    composeProject,
    images: { db: image('DB_IMAGE', OFFICIAL_IMAGES.db), migrate: image('MIGRATE_IMAGE', OFFICIAL_IMAGES.migrate), node: image('NODE_IMAGE', OFFICIAL_IMAGES.node) },
    nativeDir: dir('DB_NATIVE_DIR', '.data'),
    pgBinDir: env.PG_BIN_DIR ? path.resolve(root, env.PG_BIN_DIR) : undefined,
    nativeUser: env.DB_NATIVE_USER || 'postgres',
    upTimeoutMs: int(env, 'DB_UP_TIMEOUT', 60, 1, 3600) * 1000,
    lockTimeoutMs: int(env, 'DB_MIGRATE_LOCK_TIMEOUT', 15, 0, 3600) * 1000,
    env,
  };
}

import path from 'node:path';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { ident, literal } from './pg.ts';
import type { Admin } from './provision.ts';
import type { Login } from './roles.ts';
import { scramVerifier, passwordProblem } from './scram.ts';
import { newPassword, readSecret, writeSecret, type ReplicationSecretName } from './secrets.ts';

// The hot standby (db:replica) and its promotion (db:promote), whatever runs them. The standby logs in
// as a role of REPLICATION_GROUP, which pg_hba.conf admits for replication over TLS with SCRAM only.

/** pg_hba.conf's `hostssl replication +pgdeploy_replication` names this group; nothing else may replicate over TCP. */
export const REPLICATION_GROUP = 'pgdeploy_replication';
/** The standby's application_name (what synchronous_standby_names lists) and its physical replication slot's name. */
export const STANDBY_NAME = 'pgdeploy_standby';
const DEFAULT_USER = 'pgdeploy_replicator';
/** In the old primary's data directory once db:promote promoted the standby: db:up (native) and start.sh (docker) refuse to start it. */
export const FENCE_FILE = 'pg-deploy.fenced';

/** What `db:replica` did. */
export interface EnsureReplicaResult {
  port: number;
  /** built: a fresh base backup; started: an existing standby started again; running: it ran already (nothing changed). */
  action: 'built' | 'started' | 'running';
  /** The secret files db:replica made because they were missing. */
  createdSecrets: ReplicationSecretName[];
  /** synchronous_standby_names on the primary: set or reset now, or already as DB_SYNC_REPLICA says. */
  sync: 'on' | 'off';
  syncChanged: boolean;
  status?: ReplicaStatus;
}

/** The standby as db:status shows it. */
export interface ReplicaStatus {
  port: number;
  running: boolean;
  /** standby: in recovery; primary: promoted (db:promote), it takes writes now. */
  role?: 'standby' | 'primary';
  /** From the primary's pg_stat_replication (absent while the primary is down or the standby not connected). */
  state?: string;
  syncState?: string;
  replayLsn?: string;
  lagBytes?: number;
  /** replay_lag in seconds; 0 when the standby has replayed everything and no write came since (PostgreSQL then reports NULL). */
  lagSeconds?: number;
  /** WAL the slot keeps on the primary for the standby. */
  slotRetainedBytes?: number;
  /** Why a part could not be read. */
  problem?: string;
}

export interface PromoteResult {
  port: number;
  /** The promotion itself: pg_promote() until the server took a write. */
  ms: number;
  /** db:promote stopped a primary that still ran (a planned switchover): it must not take writes beside the promoted one. */
  stoppedPrimary: boolean;
  /** Where the old primary's data directory is fenced. */
  fence: string;
}

/** What a runtime that can run a standby provides. */
export interface Replica {
  ensure(): Promise<EnsureReplicaResult>;
  status(): Promise<ReplicaStatus | undefined>;
  /** Asks (confirm) once it knows there is something to promote. */
  promote(confirm: (question: string) => Promise<void>): Promise<PromoteResult>;
  /** Stops the standby; already stopped is not an error. */
  stop(): Promise<boolean>;
}

/** What a standby needs of the primary's runtime, whatever runs them. */
export interface ReplicaPrimary {
  running(): Promise<boolean>;
  /** The superuser on the primary's own socket. */
  admin(): Promise<Admin>;
}

/** The runtime's standby, or the clear refusal where it has none yet. */
export function replicaOf(rt: { label: string; replica?: Replica }, task: string): Replica {
  if (rt.replica) return rt.replica;
  throw new UserError(
    `${task} is not available on the ${rt.label} runtime yet`,
    'run the standby on the native runtime (DB_RUNTIME=native); see the README, Streaming replica',
  );
}

/** The replication login from `replication_user` and `replication_password`, each made (0600) when missing. */
export async function replicationLogin(ctx: Pick<Ctx, 'fs' | 'cfg' | 'log'>): Promise<{ login: Login; created: ReplicationSecretName[] }> {
  await ctx.fs.mkdir(ctx.cfg.secretsDir, { recursive: true, mode: 0o700 });
  const created: ReplicationSecretName[] = [];
  const exists = (n: ReplicationSecretName) =>
    ctx.fs.stat(path.join(ctx.cfg.secretsDir, n)).then(
      () => true,
      () => false,
    );
  for (const [name, value] of [
    ['replication_user', DEFAULT_USER],
    ['replication_password', newPassword()],
  ] as const) {
    if (await exists(name)) continue;
    await writeSecret(ctx, name, value, false).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e; // made by another run meanwhile: read below
    });
    created.push(name);
  }
  const login = { user: await readSecret(ctx, 'replication_user'), password: await readSecret(ctx, 'replication_password') };
  ctx.log.secret(login.password);
  const problem = passwordProblem(login.password);
  if (problem) {
    throw new UserError(
      `the replication password cannot be stored: ${problem}; nothing was changed`,
      `delete ${path.relative(ctx.cfg.root, path.join(ctx.cfg.secretsDir, 'replication_password'))} and run pnpm db:replica again (it makes a new one)`,
    );
  }
  return { login, created };
}

/**
 * The group and the login: LOGIN REPLICATION, nothing else. `setPassword` (no standby uses the role
 * yet) makes the role follow its file; otherwise an existing role keeps its password.
 */
export function replicationRoleSql(l: Login, setPassword: boolean): string {
  const v = literal(scramVerifier(l.password));
  return `DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(REPLICATION_GROUP)}) THEN CREATE ROLE ${ident(REPLICATION_GROUP)} NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(l.user)}) THEN
    CREATE ROLE ${ident(l.user)} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD ${v} IN ROLE ${ident(REPLICATION_GROUP)};
  ELSE
    ALTER ROLE ${ident(l.user)} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS${setPassword ? ` PASSWORD ${v}` : ''};
    GRANT ${ident(REPLICATION_GROUP)} TO ${ident(l.user)};
  END IF;
END $$;`;
}

/** A libpq password file line for this login on any host, port and database: the password never reaches argv or the environment. */
export function passfileLine(l: Login): string {
  const esc = (s: string) => s.replace(/[\\:]/g, (c) => `\\${c}`);
  return `*:*:*:${esc(l.user)}:${esc(l.password)}\n`;
}

/** A libpq connection string; every value quoted. */
export function conninfo(kv: Record<string, string | number>): string {
  return Object.entries(kv)
    .map(([k, v]) => `${k}='${String(v).replace(/[\\']/g, (c) => `\\${c}`)}'`)
    .join(' ');
}

/** A postgresql.conf string value. */
export const confString = (s: string): string => `'${s.replace(/'/g, "''")}'`;

/** How the standby reaches the primary: verify-full TLS against the project CA, the password in a passfile. */
export function primaryConninfo(o: { host: string; port: number; user: string; passfile: string; caFile: string }): string {
  return conninfo({
    host: o.host,
    port: o.port,
    user: o.user,
    passfile: o.passfile,
    sslmode: 'verify-full',
    sslrootcert: o.caFile,
    application_name: STANDBY_NAME,
  });
}

/**
 * Lines for the standby's postgresql.auto.conf (which pg_basebackup copied from the primary): its
 * primary, its slot, and no synchronous_standby_names of the primary's, or once promoted it would
 * wait for a standby that does not exist and every commit would hang.
 */
export function standbyAutoConf(copied: string, primary: string): string {
  const keep = copied
    .split('\n')
    .filter((l) => l.trim() && !/^\s*(synchronous_standby_names|primary_conninfo|primary_slot_name)\s*=/.test(l));
  return [
    ...keep,
    `# db:replica: this server follows the primary over verified TLS (the password is in the passfile)`,
    `primary_conninfo = ${confString(primary)}`,
    `primary_slot_name = ${confString(STANDBY_NAME)}`,
    '',
  ].join('\n');
}

/**
 * DB_SYNC_REPLICA on the primary: on makes every commit wait until the standby has flushed it (no
 * committed row lost on failover; writes wait while the standby is down); off resets it.
 */
export async function applySync(admin: Admin, on: boolean): Promise<boolean> {
  // The docker admin path prints an empty value as an empty line, which it drops: no row means ''.
  const now = (await admin.query('SHOW synchronous_standby_names'))[0]?.[0] ?? '';
  const want = on ? STANDBY_NAME : '';
  if (now === want) return false;
  await admin.query(
    on ? `ALTER SYSTEM SET synchronous_standby_names = ${literal(STANDBY_NAME)}` : 'ALTER SYSTEM RESET synchronous_standby_names',
  );
  await admin.query('SELECT pg_reload_conf()');
  return true;
}

/** The standby as the primary sees it: one row of [state, sync_state, replay_lsn, lag bytes, lag seconds, slot retained bytes]. */
export const PRIMARY_VIEW_SQL = `SELECT r.state, r.sync_state, r.replay_lsn::text,
  pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint,
  coalesce(extract(epoch FROM r.replay_lag), 0)::float8,
  (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint FROM pg_replication_slots s WHERE s.slot_name = ${literal(STANDBY_NAME)})
FROM (SELECT 1) one LEFT JOIN pg_stat_replication r ON r.application_name = ${literal(STANDBY_NAME)}`;

/** Fills `s` from the primary's view of the standby. */
export async function readPrimaryView(admin: Admin, s: ReplicaStatus): Promise<void> {
  const rows = await admin.query(PRIMARY_VIEW_SQL);
  const [state, syncState, replayLsn, lagBytes, lagSeconds, retained] = rows[0] ?? [];
  if (state) {
    s.state = state;
    s.syncState = syncState;
    if (replayLsn) s.replayLsn = replayLsn;
    if (lagBytes !== '') s.lagBytes = Number(lagBytes);
    s.lagSeconds = Number(lagSeconds);
  }
  if (retained) s.slotRetainedBytes = Number(retained);
}

/** `5433 standby, streaming (async), lag 0 B, 0.000 s`: the status line. */
export function replicaLine(s: ReplicaStatus): string {
  if (!s.running) return `127.0.0.1:${s.port} DOWN (pnpm db:replica starts it)`;
  if (s.role === 'primary') return `127.0.0.1:${s.port} PROMOTED: a primary now (the old primary is fenced; see the README, Failover)`;
  const parts = [`127.0.0.1:${s.port} standby`];
  if (s.state) {
    parts.push(`${s.state} (${s.syncState === 'sync' ? 'sync' : s.syncState === 'async' ? 'async' : (s.syncState ?? '?')})`);
    if (s.lagBytes !== undefined) parts.push(`lag ${s.lagBytes} B, ${(s.lagSeconds ?? 0).toFixed(3)} s`);
  } else parts.push('not connected to the primary');
  if (s.problem) parts.push(s.problem);
  return parts.join(', ');
}

/** An idle slot of the standby's name: an earlier, failed build's, dropped before a fresh one. */
export const DROP_IDLE_SLOT_SQL = `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${literal(STANDBY_NAME)} AND NOT active`;

import type { Config } from '../config.ts';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Admin } from '../provision.ts';
import { literal } from '../pg.ts';
import {
  applySync,
  DROP_IDLE_SLOT_SQL,
  readPrimaryView,
  replicationLogin,
  replicationRoleSql,
  STANDBY_NAME,
  FENCE_FILE,
  type EnsureReplicaResult,
  type PromoteResult,
  type ReplicaPrimary,
  type ReplicaStatus,
} from '../replica.ts';
import { waitFor } from '../wait.ts';
import { assertPortFree } from './processes.ts';

// What the native, the Compose and the Swarm standby (native-replica.ts, docker-replica.ts, swarm-replica.ts) do alike: the same
// refusals, the same port check, the same status and the same promotion, so that the two say and do
// the same thing; each runtime keeps only how it reaches its servers.

const PROMOTED_HINT = 'it is a primary now; keep it, or rebuild the pair as the README says (Failover)';

/** The refusals both runtimes give, word for word. */
export const refusal = {
  primaryDown: () => new UserError('the primary is not running, so no standby can follow it', 'start it first: pnpm db:up'),
  noStandby: () => new UserError('there is no standby to promote', 'create one first, while the primary runs: pnpm db:replica'),
  /** `data`: its data directory, where the runtime can show one. */
  promoted: (where: string, data?: string) =>
    new UserError(`the standby on ${where} was promoted${data ? ` (${data})` : ''}: it follows no primary`, PROMOTED_HINT),
  promotedAlready: (where: string) => new UserError(`the server on ${where} was promoted already: it is a primary`, PROMOTED_HINT),
};

/** Whether a server is in recovery: the driver (native) answers 'true', psql (docker's admin path) 't'. */
export async function inRecovery(admin: Admin): Promise<boolean> {
  const v = (await admin.query('SELECT pg_is_in_recovery()'))[0]?.[0];
  return v === 'true' || v === 't';
}

/** Refuses the standby's port, before anything is made, when it is the primary's or another process holds it. */
export async function assertStandbyPortFree(cfg: Pick<Config, 'port' | 'replicaPort'>): Promise<void> {
  if (cfg.replicaPort === cfg.port) {
    throw new UserError(
      `DB_REPLICA_PORT is ${cfg.replicaPort}, the primary's port (ENV_DB_PORT) too`,
      'set DB_REPLICA_PORT to another free port in .env.local (default: ENV_DB_PORT + 1)',
    );
  }
  await assertPortFree(cfg.replicaPort).catch((e: unknown) => {
    throw e instanceof UserError
      ? new UserError(
          `port ${cfg.replicaPort} on 127.0.0.1 (DB_REPLICA_PORT, the standby's) is taken by another process; nothing was changed`,
          'stop that process, or set DB_REPLICA_PORT to a free port in .env.local',
        )
      : e;
  });
}

/** The standby as db:status shows it: its own answer (standby or promoted), then the primary's view of it while it follows. */
export async function standbyStatus(
  port: number,
  running: boolean,
  standby: () => Promise<Admin>,
  primary: ReplicaPrimary,
): Promise<ReplicaStatus> {
  const s: ReplicaStatus = { port, running };
  if (s.running) {
    try {
      s.role = (await inRecovery(await standby())) ? 'standby' : 'primary';
    } catch (e) {
      s.problem = `the standby does not answer: ${(e as Error).message}`;
    }
  }
  if (s.role !== 'primary' && (await primary.running())) {
    await readPrimaryView(await primary.admin(), s).catch((e: Error) => {
      s.problem = `the primary's view of it cannot be read: ${e.message}`;
    });
  }
  return s;
}

/** db:promote's question, once it knows there is a standby to promote. */
export const promoteQuestion = (where: string, primaryUp: boolean): string =>
  `Promote the standby on ${where} to a primary?${primaryUp ? ' The running primary is stopped first.' : ''} The old primary is fenced: it must never come back as a primary.`;

/**
 * pg_promote() on the standby (the old primary already stopped and fenced), until it takes a write;
 * then it follows nothing and waits for no standby of its own. Returns the promotion's ms.
 */
export async function promoteStandby(ctx: Pick<Ctx, 'cfg' | 'log' | 'clock'>, su: Admin, where: string): Promise<number> {
  const t0 = performance.now();
  ctx.log.step(`promoting the standby on ${where}`);
  await su.query('SELECT pg_promote(true, 60)');
  await waitFor(
    ctx,
    'waiting for the promoted server to take writes',
    ctx.cfg.upTimeoutMs,
    async () => {
      if (await inRecovery(su)) return false;
      await su.query('SELECT txid_current()'); // assigns a transaction id: fails while read-only
      return true;
    },
    () => `the standby on ${where} did not leave recovery within ${ctx.cfg.upTimeoutMs / 1000}s`,
    10,
  );
  const ms = Math.round(performance.now() - t0);
  // ALTER SYSTEM cannot share a statement: one each.
  for (const k of ['primary_conninfo', 'primary_slot_name', 'synchronous_standby_names']) await su.query(`ALTER SYSTEM RESET ${k}`);
  await su.query('SELECT pg_reload_conf()');
  return ms;
}

/**
 * Until the primary sees the standby streaming and, with `sync` true, as its synchronous standby (each
 * walsender rereads the setting after the reload, a moment later). `sync` undefined: its sync state is
 * not set yet, so neither awaited nor shown. `died` ends the wait with the standby's own reason; `see`
 * ends the timeout message, pointing to the standby's log.
 */
export async function waitStreaming(
  ctx: Pick<Ctx, 'cfg' | 'log' | 'clock'>,
  su: Admin,
  o: { sync?: boolean; see: string; intervalMs: number; died?: () => Promise<void> },
): Promise<void> {
  let seen = '';
  await waitFor(
    ctx,
    'waiting for the standby to stream',
    ctx.cfg.upTimeoutMs,
    async () => {
      await o.died?.();
      const rows = await su.query(`SELECT state, sync_state FROM pg_stat_replication WHERE application_name = ${literal(STANDBY_NAME)}`);
      seen = rows[0] ? rows[0].slice(0, o.sync === undefined ? 1 : 2).join(', ') : 'not connected';
      return rows[0]?.[0] === 'streaming' && (!o.sync || rows[0][1] === 'sync');
    },
    () => `the standby did not stream within ${ctx.cfg.upTimeoutMs / 1000}s (last state: ${seen}); ${o.see}`,
    o.intervalMs,
  );
}

/** A standby run by an engine (Compose's service, Swarm's): how to see it, start it and ask it. */
export interface ContainerStandby {
  primary: ReplicaPrimary;
  running(): Promise<boolean>;
  /** It has data (a base backup was taken into its volume). */
  built(): Promise<boolean>;
  /** Starts it; on an empty volume its entrypoint takes the base backup. */
  start(): Promise<void>;
  /** The superuser on the standby's own socket. */
  admin: Admin;
  status(): Promise<ReplicaStatus | undefined>;
  where: string;
  /** Where its log is, for the message when it does not stream. */
  see: string;
}

/**
 * db:replica where an engine runs the standby: the role and its secret files, the slot (reserved
 * now, so the primary keeps every segment until the standby has it), the start; then until it
 * streams, and with DB_SYNC_REPLICA=on until the primary counts it as its synchronous standby.
 */
export async function ensureContainerStandby(
  ctx: Pick<Ctx, 'cfg' | 'fs' | 'log' | 'clock'>,
  sb: ContainerStandby,
): Promise<EnsureReplicaResult> {
  const { cfg } = ctx;
  if (!(await sb.primary.running())) throw refusal.primaryDown();
  const su = await sb.primary.admin();
  let action: EnsureReplicaResult['action'] = 'running';
  let createdSecrets: EnsureReplicaResult['createdSecrets'] = [];
  if (!(await sb.running())) {
    await assertStandbyPortFree(cfg);
    const fresh = !(await sb.built());
    const { login, created } = await replicationLogin(ctx);
    createdSecrets = created;
    // A fresh standby: the role follows its file, and the slot starts now (an earlier, failed build's is dropped).
    await su.query(replicationRoleSql(login, fresh));
    if (fresh) await su.query(DROP_IDLE_SLOT_SQL);
    await su.query(
      `SELECT pg_create_physical_replication_slot(${literal(STANDBY_NAME)}, true) WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = ${literal(STANDBY_NAME)})`,
    );
    if (fresh) ctx.log.step(`the standby takes a base backup of the primary over verified TLS as ${login.user}`);
    await sb.start();
    action = fresh ? 'built' : 'started';
  }
  if (!(await inRecovery(sb.admin))) throw refusal.promoted(sb.where);
  await waitStreaming(ctx, su, { see: sb.see, intervalMs: 100 });
  const syncChanged = await applySync(su, cfg.syncReplica);
  // Each walsender rereads synchronous_standby_names a moment after the reload.
  if (cfg.syncReplica) await waitStreaming(ctx, su, { sync: true, see: sb.see, intervalMs: 100 });
  return { port: cfg.replicaPort, action, createdSecrets, sync: cfg.syncReplica ? 'on' : 'off', syncChanged, status: await sb.status() };
}

/**
 * db:promote where an engine runs both servers: the standby started if need be, one question, the
 * old primary stopped so that its engine cannot start it again (a crash's restart included), fenced,
 * then the promotion.
 */
export async function promoteContainerStandby(
  ctx: Pick<Ctx, 'cfg' | 'log' | 'clock'>,
  sb: ContainerStandby & { stopPrimary(): Promise<void>; fence(text: string): Promise<void>; primaryName: string },
  confirm: (question: string) => Promise<void>,
): Promise<PromoteResult> {
  if (!(await sb.built())) throw refusal.noStandby();
  if (!(await sb.running())) {
    await assertStandbyPortFree(ctx.cfg);
    await sb.start();
  }
  if (!(await inRecovery(sb.admin))) throw refusal.promotedAlready(sb.where);
  const primaryUp = await sb.primary.running();
  await confirm(promoteQuestion(sb.where, primaryUp));
  ctx.log.step(`stopping the old primary (${sb.primaryName})`);
  await sb.stopPrimary();
  ctx.log.step('fencing the old primary');
  await sb.fence(`the standby on ${sb.where} was promoted at ${ctx.clock().toISOString()}: this cluster must not come back as a primary`);
  const ms = await promoteStandby(ctx, sb.admin, sb.where);
  return { port: ctx.cfg.replicaPort, ms, stoppedPrimary: primaryUp, fence: `${FENCE_FILE} in ${sb.primaryName}'s data directory` };
}

import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { literal } from '../pg.ts';
import type { Admin } from '../provision.ts';
import {
  applySync,
  readPrimaryView,
  replicationLogin,
  replicationRoleSql,
  STANDBY_NAME,
  type EnsureReplicaResult,
  type PromoteResult,
  type Replica,
  type ReplicaStatus,
} from '../replica.ts';
import { waitFor } from '../wait.ts';
import { DB_SERVICE, FENCE_FILE } from './compose.ts';
import { assertPortFree } from './processes.ts';

// db:replica, db:status's standby and db:promote for a standby that runs in a container beside
// api-db (its entrypoint, db-replica-start, takes the base backup as the replication role on an
// empty volume): what the container engine does is a StandbyPlace. The Swarm target's runs on it
// (swarm-replica.ts); the Compose one (docker-replica.ts) does the same steps with its own copy.

/** What differs between container engines. */
export interface StandbyPlace {
  /** Where the host reaches the standby, for messages. */
  where: string;
  /** Where people read the standby's log. */
  logHint: string;
  primary: { running(): Promise<boolean>; admin(): Promise<Admin> };
  /** The superuser on the standby's own socket. */
  admin: Admin;
  running(): Promise<boolean>;
  /** Its volume exists: there is a standby (running or not, promoted or not). */
  built(): Promise<boolean>;
  /** Starts it (the first time: builds it) and returns once it is healthy. */
  start(): Promise<void>;
  /** Stops it (it runs). */
  stop(): Promise<void>;
  /** Stops the primary, deliberately: no restart policy brings it back. */
  stopPrimary(): Promise<void>;
  /** Writes the fence (one line) into the stopped primary's data directory. */
  fence(text: string): Promise<void>;
}

export function containerStandby(ctx: Ctx, place: StandbyPlace): Replica {
  const { cfg, log } = ctx;
  const { where, admin } = place;
  const inRecovery = async () => (await admin.query('SELECT pg_is_in_recovery()'))[0]?.[0] === 't';
  const promotedHint = `it is a primary now; keep it, or rebuild the pair as the README says (Failover)`;

  async function assertPortFreeForStandby(): Promise<void> {
    if (cfg.replicaPort === cfg.port) {
      throw new UserError(
        `DB_REPLICA_PORT is ${cfg.replicaPort}, the primary's port (ENV_DB_PORT) too`,
        'set DB_REPLICA_PORT to another free port in .env.local (default: ENV_DB_PORT + 1)',
      );
    }
    await assertPortFree(cfg.replicaPort).catch((e: unknown) => {
      throw e instanceof UserError
        ? new UserError(
            `port ${cfg.replicaPort} (DB_REPLICA_PORT, the standby's) is taken by another process; nothing was changed`,
            'stop that process, or set DB_REPLICA_PORT to a free port in .env.local',
          )
        : e;
    });
  }

  /** Until the primary sees the standby streaming. */
  async function waitStreaming(su: Admin): Promise<void> {
    let seen = '';
    await waitFor(
      ctx,
      'waiting for the standby to stream',
      cfg.upTimeoutMs,
      async () => {
        const rows = await su.query(`SELECT state FROM pg_stat_replication WHERE application_name = ${literal(STANDBY_NAME)}`);
        seen = rows[0]?.[0] ?? 'not connected';
        return seen === 'streaming';
      },
      () => `the standby did not stream within ${cfg.upTimeoutMs / 1000}s (last state: ${seen}); ${place.logHint}`,
      100,
    );
  }

  async function status(): Promise<ReplicaStatus | undefined> {
    if (!(await place.built())) return undefined;
    const s: ReplicaStatus = { port: cfg.replicaPort, running: await place.running() };
    if (s.running) {
      try {
        s.role = (await inRecovery()) ? 'standby' : 'primary';
      } catch (e) {
        s.problem = `the standby does not answer: ${(e as Error).message}`;
      }
    }
    if (s.role !== 'primary' && (await place.primary.running())) {
      await readPrimaryView(await place.primary.admin(), s).catch((e: Error) => {
        s.problem = `the primary's view of it cannot be read: ${e.message}`;
      });
    }
    return s;
  }

  return {
    status,
    async stop() {
      if (!(await place.running())) return false;
      await place.stop();
      return true;
    },
    async ensure(): Promise<EnsureReplicaResult> {
      if (!(await place.primary.running()))
        throw new UserError('the primary is not running, so no standby can follow it', 'start it first: pnpm db:up');
      const su = await place.primary.admin();
      let action: EnsureReplicaResult['action'] = 'running';
      let createdSecrets: EnsureReplicaResult['createdSecrets'] = [];
      if (!(await place.running())) {
        await assertPortFreeForStandby();
        const fresh = !(await place.built());
        const { login, created } = await replicationLogin(ctx);
        createdSecrets = created;
        // A fresh standby: the role follows its file, and the slot starts now (an earlier, failed build's is dropped).
        await su.query(replicationRoleSql(login, fresh));
        if (fresh)
          await su.query(
            `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${literal(STANDBY_NAME)} AND NOT active`,
          );
        // Reserved now, so the primary keeps every WAL segment from here until the standby has it.
        await su.query(
          `SELECT pg_create_physical_replication_slot(${literal(STANDBY_NAME)}, true) WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = ${literal(STANDBY_NAME)})`,
        );
        if (fresh) log.step(`the standby takes a base backup of the primary over verified TLS as ${login.user}`);
        await place.start();
        action = fresh ? 'built' : 'started';
      }
      if (!(await inRecovery())) throw new UserError(`the standby on ${where} was promoted: it follows no primary`, promotedHint);
      await waitStreaming(su);
      const syncChanged = await applySync(su, cfg.syncReplica);
      return { port: cfg.replicaPort, action, createdSecrets, sync: cfg.syncReplica ? 'on' : 'off', syncChanged, status: await status() };
    },
    async promote(confirm): Promise<PromoteResult> {
      if (!(await place.built()))
        throw new UserError('there is no standby to promote', 'create one first, while the primary runs: pnpm db:replica');
      if (!(await place.running())) {
        await assertPortFreeForStandby();
        await place.start();
      }
      if (!(await inRecovery())) throw new UserError(`the server on ${where} was promoted already: it is a primary`, promotedHint);
      const primaryUp = await place.primary.running();
      await confirm(
        `Promote the standby on ${where} to a primary?${primaryUp ? ' The running primary is stopped first.' : ''} The old primary is fenced: it must never come back as a primary.`,
      );
      // Always: after a crash the restart policy may be about to bring the old primary back. A deliberate
      // stop cancels that, and a fast shutdown of a running one sends the standby every last WAL record.
      log.step(`stopping the old primary (${DB_SERVICE})`);
      await place.stopPrimary();
      log.step('fencing the old primary');
      await place.fence(
        `the standby on ${where} was promoted at ${ctx.clock().toISOString()}: this cluster must not come back as a primary`,
      );
      const t0 = performance.now();
      log.step(`promoting the standby on ${where}`);
      await admin.query('SELECT pg_promote(true, 60)');
      await waitFor(
        ctx,
        'waiting for the promoted server to take writes',
        cfg.upTimeoutMs,
        async () => {
          if (await inRecovery()) return false;
          await admin.query('SELECT txid_current()'); // assigns a transaction id: fails while read-only
          return true;
        },
        () => `the standby on ${where} did not leave recovery within ${cfg.upTimeoutMs / 1000}s`,
        10,
      );
      const ms = Math.round(performance.now() - t0);
      // It follows nothing now, and waits for no standby of its own (ALTER SYSTEM cannot share a statement).
      for (const k of ['primary_conninfo', 'primary_slot_name', 'synchronous_standby_names']) await admin.query(`ALTER SYSTEM RESET ${k}`);
      await admin.query('SELECT pg_reload_conf()');
      return { port: cfg.replicaPort, ms, stoppedPrimary: primaryUp, fence: `${FENCE_FILE} in ${DB_SERVICE}'s data directory` };
    },
  };
}

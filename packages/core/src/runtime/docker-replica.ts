import type { Ctx } from '../context.ts';
import { CommandError, UserError } from '../errors.ts';
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
import { compose, DB_SERVICE, engine, FENCE_FILE, REPLICA_SERVICE, REPLICA_VOLUME } from './compose.ts';
import { assertPortFree } from './processes.ts';

/** What the standby needs of the docker runtime's primary. */
export interface DockerPrimary {
  running(): Promise<boolean>;
  /** The superuser on api-db's socket (SQL on stdin through `compose exec`). */
  admin(): Promise<Admin>;
}

/**
 * The hot standby on the docker runtime: the `api-db-replica` service of the `replica` profile. Its
 * entrypoint (db-replica-start) takes the base backup over verified TLS as the replication role on
 * an empty volume; this side makes the role, its secret files and the slot, starts the service and
 * waits until the primary sees it streaming.
 */
export function dockerReplica(ctx: Ctx, env: Record<string, string>, primary: DockerPrimary): Replica {
  const { cfg, exec, log } = ctx;
  const file = cfg.composeFile;
  const where = `127.0.0.1:${cfg.replicaPort}`;
  /** For probes, whose exit code is the answer. */
  const ask = (args: string[]) => exec('docker', args, { cwd: cfg.root, env, nothrow: true });
  const docker = (args: string[], failure: { message: string; hint: string }) => exec('docker', args, { cwd: cfg.root, env, failure });

  const running = async () => (await ask(compose.replicaPs(file))).stdout.trim() !== '';
  /** Its volume: there is a standby (running or not, promoted or not) once it exists; no answer counts as one. */
  const built = async () => {
    const r = await ask(engine.dataVolume(cfg.composeProject, REPLICA_VOLUME));
    return r.code !== 0 || r.stdout.trim() !== '';
  };

  // The superuser on the standby's own socket, as for api-db.
  const admin: Admin = {
    async query(sql, database = 'postgres') {
      const failure = { message: `SQL as the superuser in ${REPLICA_SERVICE} failed`, hint: `see: docker compose logs ${REPLICA_SERVICE}` };
      const r = await exec('docker', compose.replicaAdminSql(file, database), { cwd: cfg.root, env, input: sql, failure });
      return r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\x1f'));
    },
  };
  const inRecovery = async () => (await admin.query('SELECT pg_is_in_recovery()'))[0]?.[0] === 't';

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
            `port ${cfg.replicaPort} on 127.0.0.1 (DB_REPLICA_PORT, the standby's) is taken by another process; nothing was changed`,
            'stop that process, or set DB_REPLICA_PORT to a free port in .env.local',
          )
        : e;
    });
  }

  /** `compose up --wait` of the standby alone (never api-db), with what a failure means. */
  async function up(): Promise<void> {
    const timeoutS = Math.ceil(cfg.upTimeoutMs / 1000);
    log.step(`starting ${REPLICA_SERVICE} with Docker Compose (${where})`);
    await exec('docker', compose.replicaUp(file, timeoutS), {
      cwd: cfg.root,
      env,
      failure: { message: `docker compose up ${REPLICA_SERVICE} failed`, hint: `see why: docker compose logs ${REPLICA_SERVICE}` },
    }).catch(async (e: unknown) => {
      if (!(e instanceof CommandError)) throw e;
      if (/address already in use|port is already allocated/i.test(e.stderr)) {
        throw new UserError(
          `port ${cfg.replicaPort} on 127.0.0.1 (DB_REPLICA_PORT, the standby's) is taken by another process`,
          'stop that process, or set DB_REPLICA_PORT to a free port in .env.local',
        );
      }
      const said = (await ask(compose.lastLogs(file, REPLICA_SERVICE, 10))).stdout
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => /db-replica-start|FATAL|error/i.test(l))
        .pop();
      if (said) throw new UserError(`${REPLICA_SERVICE} did not start: ${said}`, `see: docker compose logs ${REPLICA_SERVICE}`);
      throw e;
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
      () =>
        `the standby did not stream within ${cfg.upTimeoutMs / 1000}s (last state: ${seen}); see: docker compose logs ${REPLICA_SERVICE}`,
      100,
    );
  }

  const promotedHint = `it is a primary now; keep it, or rebuild the pair as the README says (Failover)`;

  async function status(): Promise<ReplicaStatus | undefined> {
    if (!(await built())) return undefined;
    const s: ReplicaStatus = { port: cfg.replicaPort, running: await running() };
    if (s.running) {
      try {
        s.role = (await inRecovery()) ? 'standby' : 'primary';
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

  return {
    status,
    async stop() {
      if (!(await running())) return false;
      await docker(compose.replicaStop(file), { message: `docker compose stop ${REPLICA_SERVICE} failed`, hint: 'see the message' });
      return true;
    },
    async ensure(): Promise<EnsureReplicaResult> {
      if (!(await primary.running()))
        throw new UserError('the primary is not running, so no standby can follow it', 'start it first: pnpm db:up');
      const su = await primary.admin();
      let action: EnsureReplicaResult['action'] = 'running';
      let createdSecrets: EnsureReplicaResult['createdSecrets'] = [];
      if (!(await running())) {
        await assertPortFreeForStandby();
        const fresh = !(await built());
        const { login, created } = await replicationLogin(ctx);
        createdSecrets = created;
        // A fresh standby: the role follows its file, and the slot starts now (an earlier, failed build's is dropped).
        await su.query(replicationRoleSql(login, fresh));
        if (fresh) {
          await su.query(
            `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${literal(STANDBY_NAME)} AND NOT active`,
          );
        }
        // Reserved now, so the primary keeps every WAL segment from here until the standby has it.
        await su.query(
          `SELECT pg_create_physical_replication_slot(${literal(STANDBY_NAME)}, true) WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = ${literal(STANDBY_NAME)})`,
        );
        if (fresh) log.step(`the standby takes a base backup of the primary over verified TLS as ${login.user}`);
        await up();
        action = fresh ? 'built' : 'started';
      }
      if (!(await inRecovery())) throw new UserError(`the standby on ${where} was promoted: it follows no primary`, promotedHint);
      await waitStreaming(su);
      const syncChanged = await applySync(su, cfg.syncReplica);
      return { port: cfg.replicaPort, action, createdSecrets, sync: cfg.syncReplica ? 'on' : 'off', syncChanged, status: await status() };
    },
    async promote(confirm): Promise<PromoteResult> {
      if (!(await built()))
        throw new UserError('there is no standby to promote', 'create one first, while the primary runs: pnpm db:replica');
      if (!(await running())) {
        await assertPortFreeForStandby();
        await up();
      }
      if (!(await inRecovery())) throw new UserError(`the server on ${where} was promoted already: it is a primary`, promotedHint);
      const primaryUp = await primary.running();
      await confirm(
        `Promote the standby on ${where} to a primary?${primaryUp ? ' The running primary is stopped first.' : ''} The old primary is fenced: it must never come back as a primary.`,
      );
      // Always: after a crash the restart policy may be about to bring the old primary back. A deliberate
      // stop cancels that, and a fast shutdown of a running one sends the standby every last WAL record.
      log.step(`stopping the old primary (${DB_SERVICE})`);
      await docker(compose.stop(file), { message: `docker compose stop ${DB_SERVICE} failed`, hint: 'see the message' });
      log.step('fencing the old primary');
      await docker(
        compose.fence(
          file,
          `the standby on ${where} was promoted at ${ctx.clock().toISOString()}: this cluster must not come back as a primary`,
        ),
        { message: `could not fence ${DB_SERVICE}'s data directory`, hint: 'see the message; do not start api-db again' },
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

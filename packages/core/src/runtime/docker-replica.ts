import type { Ctx } from '../context.ts';
import { CommandError, UserError } from '../errors.ts';
import type { Admin } from '../provision.ts';
import type { Replica, ReplicaPrimary, ReplicaStatus } from '../replica.ts';
import { compose, DB_SERVICE, engine, REPLICA_SERVICE, REPLICA_VOLUME } from './compose.ts';
import { ensureContainerStandby, promoteContainerStandby, standbyStatus } from './standby.ts';

/**
 * The hot standby on the docker runtime: the `api-db-replica` service of the `replica` profile. Its
 * entrypoint (db-replica-start) takes the base backup over verified TLS as the replication role on
 * an empty volume; this side makes the role, its secret files and the slot, starts the service and
 * waits until the primary sees it streaming.
 */
export function dockerReplica(ctx: Ctx, env: Record<string, string>, primary: ReplicaPrimary): Replica {
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

  async function status(): Promise<ReplicaStatus | undefined> {
    if (!(await built())) return undefined;
    return standbyStatus(cfg.replicaPort, await running(), async () => admin, primary);
  }

  const standby = {
    primary,
    running,
    built,
    start: up,
    admin,
    status,
    where,
    see: `see: docker compose logs ${REPLICA_SERVICE}`,
    primaryName: DB_SERVICE,
    // Always: after a crash the restart policy may be about to bring the old primary back. A deliberate
    // stop cancels that, and a fast shutdown of a running one sends the standby every last WAL record.
    stopPrimary: async () =>
      void (await docker(compose.stop(file), { message: `docker compose stop ${DB_SERVICE} failed`, hint: 'see the message' })),
    fence: async (text: string) =>
      void (await docker(compose.fence(file, text), {
        message: `could not fence ${DB_SERVICE}'s data directory`,
        hint: 'see the message; do not start api-db again',
      })),
  };

  return {
    status,
    async stop() {
      if (!(await running())) return false;
      await docker(compose.replicaStop(file), { message: `docker compose stop ${REPLICA_SERVICE} failed`, hint: 'see the message' });
      return true;
    },
    ensure: () => ensureContainerStandby(ctx, standby),
    promote: (confirm) => promoteContainerStandby(ctx, standby, confirm),
  };
}

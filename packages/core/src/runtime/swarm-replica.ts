import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Admin } from '../provision.ts';
import { FENCE_FILE, type Replica, type ReplicaPrimary } from '../replica.ts';
import { waitFor } from '../wait.ts';
import { DATA_VOLUME, DB_SERVICE, REPLICA_SERVICE, REPLICA_VOLUME } from './compose.ts';
import { adminRows } from './container-tools.ts';
import { ensureContainerStandby, promoteContainerStandby, standbyStatus } from './standby.ts';
import { DATA_DIR } from './docker-pitr.ts';
import { swarm } from './swarm-commands.ts';
import type { SwarmStack } from './swarm-deploy.ts';
import { createObjects, wantedObjects } from './swarm-objects.ts';
import { oneOffArgs } from './swarm-oneoff.ts';
import { LABEL_SPEC, replicasVar, SPEC_VAR, STANDBY_STACK_FILE } from './swarm-stack.ts';

// The hot standby on DB_TARGET=swarm: the service api-db-replica of infra/docker-stack.replica.yml,
// deployed into the stack by pnpm db:replica only (no --prune: the stack's other services stay as
// they are), with its own volume, on the data node. Its replication secrets exist only from then on.

const DATA_MOUNT = path.dirname(DATA_DIR);

/** The first line of the fence db:promote wrote into api-db's data directory, or '' (none, or no data volume). */
export async function fencedText(ctx: Ctx, st: SwarmStack): Promise<string> {
  const script = `if [ -e "$1/${FENCE_FILE}" ]; then head -n 1 "$1/${FENCE_FILE}"; fi`;
  const args = await oneOffArgs(ctx, st, { volume: DATA_VOLUME, mount: DATA_MOUNT, create: false }, script, 'db-fence-check', [DATA_DIR]);
  if (!args) return '';
  return (await st.docker(args, { message: `could not read ${DB_SERVICE}'s data volume`, hint: 'see the message above' })).stdout.trim();
}

export function swarmReplica(ctx: Ctx, st: SwarmStack, primary: ReplicaPrimary): Replica {
  const { cfg, exec } = ctx;
  const { stack, svc, ask } = st;
  const file = path.join(cfg.root, STANDBY_STACK_FILE);
  const where = `port ${cfg.replicaPort} of this node`;
  const logHint = `see: docker service logs ${svc(REPLICA_SERVICE)}`;
  const container = async (healthy: boolean) =>
    (await ask(swarm.container(stack, REPLICA_SERVICE, healthy))).stdout.trim().split('\n')[0] ?? '';

  const admin: Admin = {
    async query(sql, database = 'postgres') {
      const id = await container(false);
      if (!id) throw new UserError(`${REPLICA_SERVICE} of stack ${stack} is not running on this node`, logHint);
      const failure = { message: `SQL as the superuser in ${REPLICA_SERVICE} failed`, hint: logHint };
      return adminRows(
        (await exec('docker', ['exec', '-i', id, '/usr/local/bin/db-admin-sql', database], { cwd: cfg.root, input: sql, failure })).stdout,
      );
    },
  };

  /** Deploys the standby's file into the stack when it differs from what runs (or scales it back to 1), then waits until it is healthy. */
  async function start(): Promise<void> {
    await st.pinData();
    const { objects, env } = await wantedObjects(ctx, stack, st.env, 'standby');
    await createObjects(ctx, stack, objects, st.env);
    const vars = { ...env, [replicasVar(REPLICA_SERVICE)]: '1' };
    const rendered = await exec('docker', swarm.config(file), {
      cwd: cfg.root,
      env: { ...vars, [SPEC_VAR]: '-' },
      failure: { message: `docker stack config could not read ${STANDBY_STACK_FILE}` },
    });
    const spec = createHash('sha256').update(rendered.stdout).digest('hex').slice(0, 16);
    const now = (await st.deployed())[REPLICA_SERVICE];
    const before = new Set((await ask(swarm.allContainers(stack, REPLICA_SERVICE))).stdout.split('\n').map((l) => l.split(' ')[0]));
    ctx.log.step(`starting ${REPLICA_SERVICE} on Docker Swarm (${where})`);
    if (now?.Spec.Labels?.[LABEL_SPEC] !== spec)
      await exec('docker', swarm.deploy(file, stack), {
        cwd: cfg.root,
        env: { ...vars, [SPEC_VAR]: spec },
        timeoutMs: cfg.upTimeoutMs + 60_000,
        failure: { message: `docker stack deploy of ${STANDBY_STACK_FILE} into ${stack} failed`, hint: logHint },
      });
    else await st.docker(swarm.scale(svc(REPLICA_SERVICE), 1), { message: `could not start ${svc(REPLICA_SERVICE)}`, hint: logHint });
    await waitFor(
      ctx,
      `waiting for ${REPLICA_SERVICE} to be healthy`,
      cfg.upTimeoutMs,
      async () => {
        if (await container(true)) return true;
        // A task that ended: its entrypoint said why (db-replica-start, or the server's FATAL line).
        const ended = (await ask(swarm.allContainers(stack, REPLICA_SERVICE))).stdout
          .split('\n')
          .map((l) => l.split(' '))
          .filter(([id, s]) => id && !before.has(id) && (s === 'exited' || s === 'dead'));
        if (!ended.length) return false;
        const said = (await ask(['logs', '--tail', '10', ended[0][0]])).stderr
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => /db-replica-start|FATAL|error/i.test(l))
          .pop();
        throw new UserError(`${REPLICA_SERVICE} did not start${said ? `: ${said}` : ''}`, logHint);
      },
      () => `${REPLICA_SERVICE} is not healthy after ${Math.ceil(cfg.upTimeoutMs / 1000)}s; ${logHint}`,
      500,
    );
  }

  const running = async () => (await container(false)) !== '';
  /** Its volume: there is a standby (running or not, promoted or not) once it exists; no answer counts as one. */
  const built = async () => {
    const r = await ask(swarm.volume(stack, REPLICA_VOLUME));
    return r.code !== 0 || r.stdout.trim() !== '';
  };
  const status = async () => ((await built()) ? standbyStatus(cfg.replicaPort, await running(), async () => admin, primary) : undefined);

  /** The fence, in the stopped primary's data directory, by a one-off container as the server's user. */
  async function fence(text: string): Promise<void> {
    const script = `printf '%s\\n' "$1" >"$2/${FENCE_FILE}"`;
    const o = { volume: DATA_VOLUME, mount: DATA_MOUNT, create: false, user: 'postgres' };
    const args = await oneOffArgs(ctx, st, o, script, 'db-fence', [text, DATA_DIR]);
    if (!args) throw new UserError(`${DB_SERVICE} has no data volume to fence`, 'see: docker volume ls');
    await st.docker(args, {
      message: `could not fence ${DB_SERVICE}'s data directory`,
      hint: 'see the message; do not start api-db again',
    });
  }

  const standby = {
    primary,
    running,
    built,
    start,
    admin,
    status,
    where,
    see: logHint,
    primaryName: DB_SERVICE,
    // Always, scaled to 0: Swarm would otherwise start the old primary again after a crash.
    stopPrimary: () => st.scaleDown(DB_SERVICE),
    fence,
  };

  return {
    status,
    async stop() {
      if (!(await running())) return false;
      await st.scaleDown(REPLICA_SERVICE);
      return true;
    },
    ensure: () => ensureContainerStandby(ctx, standby),
    promote: (confirm) => promoteContainerStandby(ctx, standby, confirm),
  };
}

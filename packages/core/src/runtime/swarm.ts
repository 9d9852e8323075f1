import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { waitFor } from '../wait.ts';
import type { Runtime } from './runtime.ts';
import { loadMigrations } from '../migrations/files.ts';
import { migrateArgs } from '../migrations/command.ts';
import { DATA_VOLUME, DB_SERVICE, MIGRATE_SERVICE, REPLICA_SERVICE, refuseSingleTransaction } from './compose.ts';
import { loginTargets, provisionOverTls } from './target.ts';
import { swarm } from './swarm-commands.ts';
import { swarmStack } from './swarm-deploy.ts';
import { swarmExec, type ExecState } from './swarm-exec.ts';
import { APP_SERVICE } from './swarm-image.ts';
import { runJob } from './swarm-job.ts';
import { pruneObjects } from './swarm-objects.ts';
import { swarmPitr } from './swarm-pitr.ts';
import { fencedText, swarmReplica } from './swarm-replica.ts';

// DB_TARGET=swarm, in parts: swarm-stack.ts (the stack file from the compose file), swarm-commands.ts
// (the `docker` arguments), swarm-objects.ts (versioned secrets and configs), swarm-image.ts (the
// api's image), swarm-deploy.ts (deploy and wait), swarm-exec.ts (docker exec into api-db),
// swarm-job.ts (the migration job), swarm-oneoff.ts (a container on a volume), swarm-pitr.ts (WAL
// archive, point-in-time recovery), swarm-replica.ts (the standby).

/**
 * DB_TARGET=swarm: the stack of infra/docker-stack.yml on this engine's swarm, named
 * COMPOSE_PROJECT_NAME. SQL and client tools go through `docker exec` into api-db's task container
 * on this node (the data node), on stdin as in the compose runtime.
 */
export function swarmRuntime(ctx: Ctx): Runtime {
  const { cfg, exec, log } = ctx;
  const st = swarmStack(ctx);
  const { stack, svc, ask } = st;
  const logins = loginTargets(ctx);
  const state: ExecState = { recovering: false };
  const { admin, pgTool, shell, psql } = swarmExec(ctx, st, logins, state);
  const running = async () => (await st.container(false)) !== '';

  return {
    label: 'docker',
    target: logins.target,
    admin,
    running,
    pitr: swarmPitr(ctx, st, state),
    replica: swarmReplica(ctx, st, { running, admin }),
    async reloadTls() {
      // A Swarm secret cannot change: the new key and certificate are new versions, and api-db is
      // updated to them (a restart, stop-first, of a few seconds; open sessions do not survive).
      await st.converge();
    },
    async restartApp() {
      const r = await st.converge(); // new versions of the secrets; the services that hold them are updated
      const app = (await st.deployed())[APP_SERVICE];
      return r.changed && Boolean(app?.Spec.Mode?.Replicated?.Replicas);
    },
    describeData: () =>
      `the Swarm stack ${stack}: its volumes ${stack}_${DATA_VOLUME} (all database data), ${stack}_pg_wal_archive (the WAL archive) and the standby's, secrets and configs`,
    prepareTools: async () => {},
    pgTool,
    async up() {
      await logins.target(); // the secrets and the CA read first: a missing file fails before anything changes
      await st.swarmNode();
      log.step(`deploying stack ${stack} on Docker Swarm (${DB_SERVICE} on port ${cfg.port}, every interface of this node)`);
      await st.pinData();
      // db:promote fenced the old primary: it must never take writes beside the promoted standby.
      const fenced = (await running()) ? '' : await fencedText(ctx, st);
      if (fenced)
        throw new UserError(
          `${DB_SERVICE}: its data directory is fenced: ${fenced}`,
          'keep the promoted server, or rebuild the pair from it as the README says (Failover); never start this one as a primary',
        );
      await st.converge();
      await st.startDb(); // a recovery that stopped api-db (scaled to 0) and did not start it again
      state.recovering = false;
      await st.ready();
      const { provisioned } = await provisionOverTls(ctx, logins, admin, DB_SERVICE);
      return { initialised: false, provisioned };
    },
    async down() {
      const was = await running();
      const standby = (await ask(swarm.container(stack, REPLICA_SERVICE, false))).stdout.trim() !== '';
      await st.removeStack();
      return { wasRunning: was || standby, ...(standby && { standby }) };
    },
    async logs(follow) {
      await exec('docker', swarm.logs(svc(DB_SERVICE), follow), { cwd: cfg.root, interactive: true, nothrow: true });
    },
    shell,
    psql,
    async destroy() {
      await st.removeStack();
      // The volumes (the data's, the WAL archive's) are freed once the tasks' containers are gone.
      let left: string[] = [];
      await waitFor(
        ctx,
        `removing the volumes of ${stack}`,
        60_000,
        async () => {
          const volumes = async () => (await ask(swarm.volumes(stack))).stdout.split('\n').filter(Boolean);
          for (const v of await volumes()) await ask(['volume', 'rm', '--force', v]); // in use: refused, tried again
          return (left = await volumes()).length === 0;
        },
        () => `could not remove the volumes ${left.join(', ')}; see: docker volume inspect ${left.join(' ')}`,
        500,
      );
      await pruneObjects(ctx, stack, [], st.env);
      const node = await st.swarmNode().catch(() => '');
      if (node) await ask(swarm.unlabelNode(stack, node));
    },
    async hasData() {
      const r = await ask(swarm.volume(stack));
      return r.code !== 0 || r.stdout.trim() !== '';
    },
    async migrate(cmd, opts = {}) {
      refuseSingleTransaction(opts);
      loadMigrations(cfg.migrationsDir, { texts: 'all' });
      await st.ready(); // the job template carries the current secrets
      const code = await runJob(ctx, st, migrateArgs(cmd));
      if (code !== 0)
        throw new UserError(
          `the ${MIGRATE_SERVICE} job exited with ${code}`,
          'read its message above; for a dirty database: pnpm db:status',
        );
      return undefined;
    },
  };
}

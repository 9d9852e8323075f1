import path from 'node:path';
import type { Ctx } from '../context.ts';
import type { DataSwap, Pitr } from '../backup/pitr-runtime.ts';
import { DATA_VOLUME, DB_SERVICE } from './compose.ts';
import { hostRedirect } from './container-tools.ts';
import {
  ARCHIVE_MOUNT,
  dataSteps,
  DATA_DIR,
  DOCKER_PITR_SCRIPTS,
  fatalOf,
  scriptOutput,
  volumeArchive,
  type ScriptName,
  type ScriptRun,
} from './docker-pitr.ts';
import { swarm } from './swarm-commands.ts';
import type { SwarmStack } from './swarm-deploy.ts';
import { oneOffArgs } from './swarm-oneoff.ts';
import type { ExecState } from './swarm-exec.ts';
import { STACK_FILE } from './swarm-stack.ts';

// Point-in-time recovery of the stack's api-db, as docker-pitr.ts does it for Compose, with its
// scripts and paths (the stack mounts the same volumes and the wal-archive script, as a config):
// the archive is the `wal/` folder of the stack's pg_wal_archive volume, the data the pg_data
// volume's `pgdata/`. While api-db runs, the scripts run in its task container (docker exec);
// while it is scaled to 0, in a one-off `docker run --rm` of its image on the volume, with no
// network. Host files travel on stdin.
//
// Swarm, unlike Compose, replaces a task whose healthcheck fails: a recovering api-db is healthy
// (pg_isready) from the moment it is consistent, which is the end of the base backup's own WAL;
// the replay after that runs as a hot standby that answers. The healthcheck's start_period (60s)
// bounds only the part before.

/** The scripts that work on the archive volume (the others: the data volume), and where a one-off container mounts each. */
const ARCHIVE_SCRIPTS: readonly ScriptName[] = ['list', 'remove', 'arm'];
const ARCHIVE_VOLUME = 'pg_wal_archive';
const DATA_MOUNT = path.dirname(DATA_DIR);

export function swarmPitr(ctx: Ctx, st: SwarmStack, state: ExecState): Pitr {
  const { cfg, exec } = ctx;
  const { stack, svc, ask } = st;

  /** SCRIPT as root in api-db's running container, else (or with oneOff) in a one-off container on its volume, a host file on stdin. */
  const inDb: ScriptRun = async (name, args, opts = {}) => {
    const id = opts.oneOff ? '' : await st.container(false);
    const archive = ARCHIVE_SCRIPTS.includes(name);
    const dockerArgs = id
      ? ['exec', '-i', id, 'sh', '-c', DOCKER_PITR_SCRIPTS[name], `db-pitr-${name}`, ...args]
      : await oneOffArgs(
          ctx,
          st,
          // No archive volume (never deployed, or deleted): nothing to read or prune.
          { volume: archive ? ARCHIVE_VOLUME : DATA_VOLUME, mount: archive ? ARCHIVE_MOUNT : DATA_MOUNT, create: !archive },
          DOCKER_PITR_SCRIPTS[name],
          `db-pitr-${name}`,
          args,
        );
    if (!dockerArgs) return '';
    const r = hostRedirect(dockerArgs, opts.input ? { in: opts.input } : {});
    return scriptOutput(name, await exec(r.cmd, r.args, { cwd: cfg.root, env: st.env, nothrow: true }));
  };

  const archive = volumeArchive(ctx, inDb, {
    where: `${path.posix.join(ARCHIVE_MOUNT, 'wal')} in the volume ${stack}_${ARCHIVE_VOLUME}`,
    volume: `${stack}_${ARCHIVE_VOLUME}`,
    file: STACK_FILE,
    hint: 'redeploy it with the current files: pnpm db:down && pnpm db:up',
  });

  return {
    archive,
    swap(pid = process.pid): DataSwap {
      const steps = dataSteps(inDb, `${DATA_DIR}.before-pitr-${pid}`);
      let since = '';
      let before = new Set<string>();
      /** api-db's containers on this node: id -> state (running, exited, ...). */
      const containers = async () =>
        new Map(
          (await ask(swarm.allContainers(stack, DB_SERVICE))).stdout
            .split('\n')
            .filter(Boolean)
            .map((l) => l.split(' ') as [string, string]),
        );
      const logSince = async () => {
        if (!since) return '';
        const r = await ask(swarm.logsSince(svc(DB_SERVICE), since));
        return `${r.stdout}${r.stderr}`;
      };
      const stop = async () => {
        await st.converge(); // a deploy later in this run would scale api-db back up under the file work
        await st.scaleDown(DB_SERVICE);
      };
      return {
        stop,
        ...steps,
        async start() {
          before = new Set((await containers()).keys());
          since = new Date(ctx.clock().getTime() - 1000).toISOString();
          state.recovering = true;
          if (!(await st.deployed())[DB_SERVICE]) {
            // Not deployed (pnpm db:down): the stack comes up on the recovered data.
            await st.pinData();
            await st.converge();
          } else await st.startDb();
        },
        async failed() {
          const ended = [...(await containers())].filter(([id, s]) => !before.has(id) && s !== 'running' && s !== 'created');
          if (!ended.length) return undefined;
          return fatalOf(await logSince()) || `${DB_SERVICE}'s task ${ended[0][1]} (${ended.length} time(s))`;
        },
        log: logSince,
        logHint: 'see: pnpm db:logs',
        async putBack(hadData) {
          state.recovering = false;
          await st.scaleDown(DB_SERVICE).catch(() => {}); // the recovery's own error is the one to report; `back` fails too if it still runs
          await steps.back(hadData);
        },
      };
    },
  };
}

import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Admin } from '../provision.ts';
import { DB_SERVICE } from './compose.ts';
import { adminRows, containerDirArgs, containerToolArgs, dumpDirVia, hostRedirect, restoreDirVia } from './container-tools.ts';
import type { Attached, Runtime } from './runtime.ts';
import type { SwarmStack } from './swarm-deploy.ts';
import type { loginTargets } from './target.ts';
import type { PgToolIo } from './tools.ts';

// SQL and client tools go through `docker exec` into api-db's task container on this node (the data
// node), on stdin as in the compose runtime: no credential in argv.

/** What the runtime's other parts tell these calls. */
export interface ExecState {
  /**
   * A recovery started api-db (swarm-pitr.ts): SQL goes to its running container at once, not once it
   * is healthy, so that the recovery's wait sees each failure and asks why (it is healthy only once
   * it is consistent). db:up clears it.
   */
  recovering: boolean;
}

/** `docker exec` arguments from the compose ones of container-tools.ts: `-i` (stdin) in place of Compose's `--no-TTY`. */
const execArgs = (composeArgs: string[]) => composeArgs.map((a) => (a === '--no-TTY' ? '-i' : a));

export function swarmExec(ctx: Ctx, st: SwarmStack, logins: ReturnType<typeof loginTargets>, state: ExecState) {
  const { cfg, exec } = ctx;

  /** api-db's container to talk to: the healthy one, or while recovering the running one. */
  async function db(): Promise<string> {
    if (!state.recovering) return st.ready();
    const id = await st.container(false);
    if (!id) throw new UserError(`${DB_SERVICE} of stack ${st.stack} is not running on this node`, 'see: pnpm db:logs');
    return id;
  }

  const admin = async (): Promise<Admin> => ({
    async query(sql, database = 'postgres') {
      const id = await db();
      const failure = { message: `SQL as the superuser in ${DB_SERVICE} failed`, hint: 'see: pnpm db:logs' };
      return adminRows(
        (await exec('docker', ['exec', '-i', id, '/usr/local/bin/db-admin-sql', database], { cwd: cfg.root, input: sql, failure })).stdout,
      );
    },
  });

  const viaHostFile = (dockerArgs: string[], io: PgToolIo) => {
    const r = hostRedirect(dockerArgs, io);
    return exec(r.cmd, r.args, { cwd: cfg.root, nothrow: true });
  };

  const pgTool: Runtime['pgTool'] = async (tool, args, io = {}) => {
    const id = await st.ready();
    if (io.outDir) return dumpDirVia(ctx, viaHostFile, execArgs(containerDirArgs([], id, 'dump', tool, args)), io.outDir);
    if (io.inDir) return restoreDirVia(ctx, viaHostFile, execArgs(containerDirArgs([], id, 'restore', tool, args)), io.inDir);
    return viaHostFile(execArgs(containerToolArgs([], id, tool, args)), io);
  };

  async function shell(args: readonly string[], io: Attached): Promise<number> {
    const id = await st.ready();
    return (
      await exec('docker', ['exec', '-i', ...(io.stdinIsTty ? ['-t'] : []), id, 'bash', ...args], { interactive: true, nothrow: true })
    ).code;
  }

  async function psql(args: readonly string[], io: Attached): Promise<number> {
    const id = await st.ready();
    // api-db holds no app_password on Swarm (EXEC_ONLY_SECRETS): `-e PGPASSWORD` without a value
    // makes the docker CLI take it from its own environment, so argv names only the variable.
    const { app } = await logins.secrets();
    return (
      await exec('docker', ['exec', '-i', ...(io.stdinIsTty ? ['-t'] : []), '-e', 'PGPASSWORD', id, '/usr/local/bin/db-psql', ...args], {
        interactive: true,
        nothrow: true,
        env: { PGPASSWORD: app.password },
      })
    ).code;
  }

  return { admin, pgTool, shell, psql };
}

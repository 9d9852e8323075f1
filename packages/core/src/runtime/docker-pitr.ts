import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { RunResult } from '../exec.ts';
import type { DataSwap, Pitr, WalArchive } from '../backup/pitr-runtime.ts';
import { BASE_TAR, WAL_TAR } from '../backup/physical-layout.ts';
import { shWord } from '../backup/wal-native.ts';
import { ARMED_FILE, armedText, type ArchiveFile } from '../backup/wal.ts';
import { compose, composeEnv, DB_SERVICE } from './compose.ts';
import { hostRedirect } from './container-tools.ts';

// Point-in-time recovery of the Compose api-db. Paths are the container's (infra/docker-compose.yml):
// the archive is the `wal/` folder of the pg_wal_archive volume, the data the pg_data volume's
// `pgdata/` (PGDATA). Everything that touches them runs in api-db (docker compose exec) while it
// runs, else in a one-off container of the same service with the same volumes (docker compose run
// --rm --no-deps); host files travel on stdin, never through a bind mount, as the backups' do.

/** Where the archive volume is mounted in api-db. */
export const ARCHIVE_MOUNT = '/var/lib/postgresql/archive';
/** The folder api-db's archive_command writes to; made (armed) by the first db:backup --physical. */
export const ARCHIVE_DIR = `${ARCHIVE_MOUNT}/wal`;
/** PGDATA of api-db: a folder of the pg_data volume, beside which the old data waits during a recovery. */
export const DATA_DIR = '/var/lib/postgresql/data/pgdata';

/** POSIX sh run in api-db (or a one-off container of it) as root: `sh -c SCRIPT NAME ARGS...`. */
export const DOCKER_PITR_SCRIPTS = {
  /** ARCHIVE_DIR: `MTIME NAME` lines, mtime in seconds (with milliseconds where stat can); nothing before it is armed. */
  list: [
    'set -eu',
    'cd "$1" 2>/dev/null || exit 0 # not armed yet: no files',
    // GNU stat gives milliseconds, busybox's only seconds (a time target within that second is then refused, never wrong).
    "fmt='%Y %n'",
    "if stat -c '%.3Y' . 2>/dev/null | grep -Eq '^[0-9]+[.][0-9]+$'; then fmt='%.3Y %n'; fi",
    'for f in * .[!.]*; do',
    '  [ -f "$f" ] || continue # a pattern that matched nothing stays as it is',
    '  stat -c "$fmt" -- "$f" || : # removed since the listing',
    'done',
  ].join('\n'),
  /** ARCHIVE_DIR NAMES...: removes these files from it. */
  remove: ['set -eu', 'cd "$1"', 'shift', 'rm -f -- "$@"'].join('\n'),
  /**
   * ARCHIVE_DIR [PGDATA TEXT]: makes it, the server's, 0700; prints `made` if it was not there. With
   * PGDATA, also writes TEXT into its ARMED_FILE (the server's, 0600) unless there is one.
   */
  arm: [
    'set -eu',
    'if [ ! -d "$1" ]; then',
    '  install -d -m 700 -o postgres -g postgres "$1"',
    '  echo made',
    'fi',
    '[ -n "${2:-}" ] || exit 0 # an older caller: the folder only',
    `f="$2/${ARMED_FILE}"`,
    'if [ ! -e "$f" ]; then',
    `  printf '%s' "$3" > "$f.tmp"`,
    '  chown postgres:postgres "$f.tmp"',
    '  chmod 600 "$f.tmp"',
    '  mv -f "$f.tmp" "$f"',
    'fi',
  ].join('\n'),
  /** DATA ASIDE: removes an earlier ASIDE of ours, moves DATA there; prints `had` if there was data. */
  aside: ['set -eu', 'rm -rf -- "$2"', 'if [ -d "$1" ]; then', '  mv -- "$1" "$2"', '  echo had', 'fi'].join('\n'),
  /** DATA, the base tar on stdin: a new data directory with its content. */
  base: ['set -eu', 'mkdir -m 700 -- "$1"', 'tar -x -f - -C "$1"'].join('\n'),
  /** DATA SETTINGS..., pg_wal's tar on stdin: pg_wal, the recovery settings, recovery.signal, all the server's. */
  wal: [
    'set -eu',
    'd="$1"',
    'shift',
    'mkdir -p -- "$d/pg_wal"',
    'chmod 700 -- "$d/pg_wal"',
    'tar -x -f - -C "$d/pg_wal"',
    `printf '\\n# pg-deploy db:restore (point-in-time recovery)\\n' >> "$d/postgresql.auto.conf"`,
    `printf '%s\\n' "$@" >> "$d/postgresql.auto.conf"`,
    ': > "$d/recovery.signal"',
    // Recovered from the archive, it archives into it: armed, even from a base backup taken before the file existed.
    `[ -e "$d/${ARMED_FILE}" ] || printf 'armed by a point-in-time recovery\\n' > "$d/${ARMED_FILE}"`,
    'chown -R postgres:postgres -- "$d"',
    'chmod 700 -- "$d"',
  ].join('\n'),
  /** ASIDE: prints `yes` if it exists. */
  has: ['set -eu', 'if [ -d "$1" ]; then echo yes; fi'].join('\n'),
  /** ASIDE: removes it. */
  drop: ['set -eu', 'rm -rf -- "$1"'].join('\n'),
  /** DATA ASIDE had|none: removes DATA, and puts ASIDE back in its place if there was data. */
  back: ['set -eu', 'rm -rf -- "$1"', 'if [ "$3" = had ]; then mv -- "$2" "$1"; fi'].join('\n'),
};

export type ScriptName = keyof typeof DOCKER_PITR_SCRIPTS;

/** FATAL lines of a failed start, without those of the tool's own connection attempts while it started. */
export const NOISE = /not yet accepting connections|is starting up|is shutting down|in recovery mode|password authentication|pg_hba\.conf/;

/** Runs one of the scripts above in api-db, or (oneOff, or while it is stopped) a one-off container on its volume; a host file on stdin. */
export type ScriptRun = (name: ScriptName, args: readonly string[], opts?: { input?: string; oneOff?: boolean }) => Promise<string>;

/** A script's output, or one error line naming what it worked on. */
export function scriptOutput(name: ScriptName, out: RunResult): string {
  if (out.code !== 0) {
    const last = out.stderr.trim().split('\n').pop() ?? '';
    throw new UserError(
      `${name === 'list' || name === 'remove' || name === 'arm' ? 'the WAL archive' : 'the data volume'}: ${name} in ${DB_SERVICE} failed (exit ${out.code})${last ? `: ${last}` : ''}`,
      'is the Docker engine up, with room in its volumes? see the message above',
    );
  }
  return out.stdout;
}

/** Why a start for recovery failed, from its log: the last FATAL or PANIC lines ('' when there is none). */
export const fatalOf = (log: string): string =>
  log
    .split('\n')
    .filter((l) => /\b(FATAL|PANIC)\b/.test(l) && !NOISE.test(l))
    .map((l) => l.trim())
    .slice(-2)
    .join(' | ');

/** The steps of a recovery that work on the data volume's files (DATA_DIR, and `aside` beside it). */
export function dataSteps(
  run: ScriptRun,
  aside: string,
): Pick<DataSwap, 'setAside' | 'restore' | 'dropAside' | 'hasAside'> & { back(hadData: boolean): Promise<void> } {
  return {
    setAside: async () => (await run('aside', [DATA_DIR, aside], { oneOff: true })).includes('had'),
    async restore(base, settings) {
      await run('base', [DATA_DIR], { input: path.join(base.dir, BASE_TAR), oneOff: true });
      await run('wal', [DATA_DIR, ...settings], { input: path.join(base.dir, WAL_TAR), oneOff: true });
    },
    async dropAside() {
      await run('drop', [aside]);
    },
    hasAside: async () => (await run('has', [aside])).includes('yes'),
    async back(hadData) {
      await run('back', [DATA_DIR, aside, hadData ? 'had' : 'none'], { oneOff: true });
    },
  };
}

/**
 * The archive volume's `wal/` folder, read and pruned through the scripts above, run in api-db (or a
 * one-off container of it) by `run`: the compose runtime's and the Swarm target's alike. `volume`
 * names the archive volume, for people and for the armed marker.
 */
export function volumeArchive(
  ctx: Pick<Ctx, 'log' | 'clock'>,
  run: ScriptRun,
  at: { where: string; volume: string; file: string; hint: string },
): WalArchive {
  return {
    where: async () => at.where,
    async check(settings) {
      if (settings.archive_mode === 'off' || !settings.archive_command.includes(shWord(ARCHIVE_DIR))) {
        throw new UserError(
          settings.archive_mode === 'off'
            ? `${DB_SERVICE} does not archive its WAL (archive_mode is off: its container predates archiving)`
            : `${DB_SERVICE} archives elsewhere than ${ARCHIVE_DIR} (its archive_command is not the one of ${at.file})`,
          at.hint,
        );
      }
    },
    async arm() {
      const text = armedText(`${ARCHIVE_DIR} (the volume ${at.volume})`, ctx.clock());
      if ((await run('arm', [ARCHIVE_DIR, DATA_DIR, text])).includes('made'))
        ctx.log.info(`WAL archiving armed: segments go to ${at.where} from now on`);
      return at.where;
    },
    async files() {
      const out: ArchiveFile[] = [];
      for (const line of (await run('list', [ARCHIVE_DIR])).split('\n')) {
        const m = /^(\d+(?:\.\d+)?) (.+)$/.exec(line);
        if (m) out.push({ name: m[2], mtimeMs: Math.round(Number(m[1]) * 1000) });
      }
      return out;
    },
    async remove(names) {
      if (names.length) await run('remove', [ARCHIVE_DIR, ...names]);
    },
    restoreCommand: async () => `cp ${shWord(ARCHIVE_DIR)}/%f %p`,
  };
}

export function dockerPitr(ctx: Ctx, running: () => Promise<boolean>): Pitr {
  const { cfg, exec } = ctx;
  const file = cfg.composeFile;
  const env = composeEnv(cfg);
  const ask = (args: string[]) => exec('docker', args, { cwd: cfg.root, env, nothrow: true });

  /** SCRIPT in api-db (running: exec, else a one-off container with its volumes), with a host file on stdin. */
  const inDb: ScriptRun = async (name, args, opts = {}) => {
    const oneOff = opts.oneOff ?? !(await running());
    const args2 = oneOff
      ? compose.runScript(file, DOCKER_PITR_SCRIPTS[name], `db-pitr-${name}`, args)
      : compose.execScript(file, DOCKER_PITR_SCRIPTS[name], `db-pitr-${name}`, args);
    const r = hostRedirect(args2, opts.input ? { in: opts.input } : {});
    return scriptOutput(name, await exec(r.cmd, r.args, { cwd: cfg.root, env, nothrow: true }));
  };

  const archive = volumeArchive(ctx, inDb, {
    where: `${ARCHIVE_DIR} in the volume pg_wal_archive of ${cfg.composeProject}`,
    volume: 'pg_wal_archive',
    file: path.basename(file),
    hint: 'recreate it with the current compose file: pnpm db:down && pnpm db:up',
  });

  return {
    archive,
    swap(pid = process.pid): DataSwap {
      const steps = dataSteps(inDb, `${DATA_DIR}.before-pitr-${pid}`);
      let since = '';
      let restarts = 0;
      const containerId = async () => (await ask(compose.psAll(file))).stdout.trim().split('\n')[0] ?? '';
      /** The container's state and restart count ('' and 0 when there is none). */
      const state = async (): Promise<[string, number]> => {
        const id = await containerId();
        if (!id) return ['', 0];
        const [status, n] = (await ask(['inspect', '--format', '{{.State.Status}} {{.RestartCount}}', id])).stdout.trim().split(' ');
        return [status ?? '', Number(n) || 0];
      };
      // Compose writes an erase-line escape before each line, even to a pipe.
      const logSince = async () => (since ? (await ask(compose.logsSince(file, since))).stdout.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '') : '');
      const stop = async () => {
        const r = await ask(compose.stop(file));
        if (r.code !== 0) throw new UserError(`could not stop ${DB_SERVICE}: ${r.stderr.trim().split('\n').pop()}`, 'see: pnpm db:logs');
      };
      return {
        stop,
        ...steps,
        async start() {
          restarts = (await state())[1];
          since = new Date(ctx.clock().getTime() - 1000).toISOString();
          const r = await ask(compose.startOnly(file));
          if (r.code !== 0) throw new UserError(`could not start ${DB_SERVICE}: ${r.stderr.trim().split('\n').pop()}`, 'see: pnpm db:logs');
        },
        async failed() {
          const [status, n] = await state();
          if (status === 'running' && n === restarts) return undefined;
          return fatalOf(await logSince()) || `${DB_SERVICE} is ${status || 'gone'} (restarted ${n - restarts} time(s))`;
        },
        log: logSince,
        logHint: 'see: pnpm db:logs',
        async putBack(hadData) {
          await stop().catch(() => {}); // the recovery's own error is the one to report; `back` fails too if it still runs
          await steps.back(hadData);
        },
      };
    },
  };
}

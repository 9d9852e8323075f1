import path from 'node:path';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { SERVER_HOMES, type NativeHome, type NativePaths } from '../runtime/native-home.ts';
import { ARCHIVE_SCRIPT, ARMED_FILE, armedText, listArchiveDir } from './wal.ts';
import type { WalArchive } from './pitr-runtime.ts';

/** The archive script of this installation of the tool (dist/cli.js's checkout), not of the project it serves. */
export function archiveScript(): string {
  const rel = path.join('database/infra/scripts', ARCHIVE_SCRIPT);
  for (let d = path.dirname(fileURLToPath(import.meta.url)); ; d = path.dirname(d)) {
    if (existsSync(path.join(d, rel))) return path.join(d, rel);
    if (d === path.dirname(d))
      throw new UserError(`${rel} is missing from this checkout of pg-deploy`, 'restore it: git checkout -- ' + rel);
  }
}

/** Single-quotes a word for the shell PostgreSQL runs archive_command and restore_command in. */
export const shWord = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * The native server's WAL archive. Archiving is always on (archive_mode needs a restart, so it is on
 * from the first db:up), but the script keeps nothing until the archive is armed: the first
 * `db:backup --physical` makes the folder and writes ARMED_FILE into the data directory. Before that,
 * no segment could be replayed anyway, so none piles up in pg_wal or in the archive; after it, a
 * missing folder is an archiving failure, never a silent hole.
 *
 * The folder is DB_WAL_ARCHIVE_DIR (default <DB_BACKUP_DIR>/wal) when the server user can reach it;
 * as root, DB_BACKUP_DIR is 0700 and the project may be under /root, so it is then a folder of that
 * user's under SERVER_HOMES, linked from DB_WAL_ARCHIVE_DIR, as native-home.ts does for the data.
 */
export function nativeArchive(ctx: Ctx, home: NativeHome) {
  const { cfg, fs, log } = ctx;
  const want = cfg.walArchiveDir;

  /** Where the server archives: the same answer before and after the folder exists. */
  async function location(): Promise<string> {
    if (!(await home.serverUser())) return want;
    const real = await fs.realpath(want).catch(() => undefined); // not armed yet
    if (real) return real;
    const parent = await fs.realpath(path.dirname(want)).catch(() => undefined);
    if (parent && (await home.serverCan('-x', parent))) return want;
    const tag = createHash('sha256').update(path.resolve(want)).digest('hex').slice(0, 10);
    return path.join(SERVER_HOMES, `${path.basename(cfg.root).replace(/[^A-Za-z0-9._-]+/g, '-')}-wal-${tag}`);
  }

  /** The script, installed in the server's folder (it may not reach the checkout), and the settings that run it. */
  async function serverOptions(s: NativePaths): Promise<[string, string][]> {
    const script = path.join(s.dir, ARCHIVE_SCRIPT);
    const tmp = `${script}.${process.pid}.tmp`;
    await fs.copyFile(archiveScript(), tmp);
    await fs.chmod(tmp, 0o755);
    await fs.rename(tmp, script);
    return [
      ['archive_mode', 'on'],
      ['archive_command', `${shWord(script)} ${shWord(await location())} %p %f`],
    ];
  }

  const exists = (p: string) =>
    fs.stat(p).then(
      () => true,
      () => false,
    );

  /** Writes ARMED_FILE into the data directory (the server's: base backups read it), once. */
  async function markArmed(dir: string): Promise<void> {
    const file = path.join((await home.sp()).data, ARMED_FILE);
    if (await exists(file)) return;
    await fs.writeFile(file, armedText(dir, ctx.clock()), { mode: 0o600 });
    await home.own(file);
  }

  /** Makes the archive folder (the server's, 0700) and marks the cluster armed, so the script keeps every segment; says where. */
  async function arm(): Promise<string> {
    const dir = await location();
    if (await exists(dir)) {
      await markArmed(dir);
      return dir;
    }
    await fs.mkdir(path.dirname(dir), { recursive: true, mode: 0o755 });
    await fs.mkdir(dir, { mode: 0o700 });
    await home.own(dir);
    if (dir !== want) {
      await fs.mkdir(path.dirname(want), { recursive: true, mode: 0o700 });
      await fs.symlink(dir, want);
      log.info(`the server user "${cfg.nativeUser}" cannot reach ${home.shown(want)}: the WAL archive lives in ${dir}, linked from it`);
    } else log.info(`WAL archiving armed: segments go to ${home.shown(dir)} from now on`);
    await markArmed(dir);
    return dir;
  }

  /** The restore_command of a recovery from this archive. */
  const restoreCommand = async () => `cp ${shWord(await location())}/%f %p`;

  /** What db:backup --physical and db:restore read and prune. */
  const archive: WalArchive = {
    where: async () => home.shown(want),
    check: async (settings) => assertArchiving(settings, await location()),
    arm,
    files: async () => listArchiveDir(ctx, await location()),
    async remove(names) {
      const dir = await location();
      for (const n of names) await fs.rm(path.join(dir, n), { force: true });
    },
    restoreCommand,
  };

  return { location, serverOptions, arm, restoreCommand, archive };
}

/** The running server must archive where we look: a server started before archiving existed needs a restart. */
export function assertArchiving(settings: { archive_mode: string; archive_command: string }, dir: string): void {
  if (settings.archive_mode === 'off' || !settings.archive_command.includes(shWord(dir))) {
    throw new UserError(
      settings.archive_mode === 'off'
        ? 'the running server does not archive its WAL (archive_mode is off; it was started before archiving was set up)'
        : `the running server archives elsewhere than ${dir} (DB_WAL_ARCHIVE_DIR changed while it ran)`,
      'restart it so it picks up the archive settings: pnpm db:down && pnpm db:up',
    );
  }
}

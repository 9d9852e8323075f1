import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Client } from 'pg';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { connect, ident, lastResult } from '../pg.ts';
import { readSecrets } from '../secrets.ts';
import type { Runtime } from '../runtime/runtime.ts';
import type { RunResult } from '../exec.ts';
import { findTables, readCurrent } from '../migrations/state.ts';
import { DATA_SQL, SCHEMA_SQL, dataDiff, dataMap, schemaDiff } from './inspect.ts';
import {
  DIR_SUM,
  DUMP,
  DUMP_DIR,
  MANIFEST,
  PARTIAL_PREFIX,
  ROLES,
  SUM,
  backupName,
  markVerified,
  shown,
  stamp,
  writeAtomic,
  type Backup,
  type Manifest,
} from './store.ts';
import { checkIntegrity, dumpDirFiles, sumFile, sumFiles, sumLines } from './integrity.ts';
import { databaseLeftovers, removeStaleFiles, SCRATCH_SQL, scratchDatabase } from './leftovers.ts';
import { treeBytes, whileRunning } from './progress.ts';
import { dumpArgs, dumpOutput, restoreArgs, restoreInput, restoreJobs, type DumpFormat } from './format.ts';
import { dumpFailure, runTool } from './tool.ts';

export interface BackupOptions {
  withPasswords?: boolean; // off: a backup holds no credential
  reason?: string; // a safety backup's: `before db:delete`
  format?: DumpFormat;
}

/** Creates DB_BACKUP_DIR, 0700 (backups hold every row), or says why it cannot be written. */
export async function ensureBackupDir(ctx: Pick<Ctx, 'cfg' | 'fs'>): Promise<void> {
  const dir = ctx.cfg.backupDir;
  try {
    await ctx.fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await ctx.fs.access(dir, 2 /* W_OK */);
  } catch (e) {
    throw new UserError(
      `cannot write backups to ${shown(ctx, dir)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      'make that directory writable for this user, or set DB_BACKUP_DIR to one that is',
    );
  }
}

async function migrationVersion(c: Client): Promise<Manifest['migration']> {
  const tables = await findTables(c);
  return tables.hasVersionTable ? readCurrent(c, tables) : { version: null, dirty: false };
}

async function arrays(c: Client, sql: string): Promise<unknown[][]> {
  const res = (await c.query({ text: sql, rowMode: 'array' })) as unknown as { rows: unknown[][] } | { rows: unknown[][] }[];
  return lastResult(res).rows;
}

/** Drops the scratch databases proven stale, given SCRATCH_SQL's rows; never WITH (FORCE): a new session keeps it. */
async function removeStaleDatabases(ctx: Pick<Ctx, 'log'>, rt: Runtime, rows: readonly (readonly unknown[])[]): Promise<void> {
  const stale = databaseLeftovers(rows).filter((l) => l.stale);
  if (!stale.length) return;
  const admin = await rt.admin();
  for (const l of stale) {
    await admin.query(`DROP DATABASE IF EXISTS ${ident(l.name)}`).then(
      () => ctx.log.info(`removed ${l.why}`),
      (e) => ctx.log.warn(`could not remove ${l.why}: ${(e as Error).message}`),
    );
  }
}

/** pg_dump dumps the snapshot a session exports while that session counts rows and lists the schema. */
export async function createBackup(ctx: Ctx, rt: Runtime, opts: BackupOptions = {}): Promise<Backup> {
  const t0 = performance.now();
  const format = opts.format ?? configuredFormat(ctx.cfg);
  const roles = await readSecrets(ctx);
  if (!(await rt.running())) throw new UserError('PostgreSQL is not running, so no backup can be taken', 'start it: pnpm db:up');
  await ensureBackupDir(ctx);
  // The login overlaps the search for client tools; nothing is written before they are found.
  const login = connect({ ...(await rt.target('migrator')), applicationName: 'pg-deploy backup' });
  login.catch(() => {}); // awaited below; never an unhandled rejection meanwhile
  const dropLogin = () =>
    login
      .then(
        (c) => c.end(),
        () => {},
      )
      .catch(() => {}); // on the way out of a failure, which is the one to report
  const at = ctx.clock();
  let tmp: string;
  let rolesRun: Promise<RunResult>;
  try {
    await rt.prepareTools();
    await removeStaleFiles(ctx);
    tmp = path.join(ctx.cfg.backupDir, `${PARTIAL_PREFIX}${stamp(at)}-${process.pid}-${randomBytes(3).toString('hex')}`);
    await ctx.fs.mkdir(tmp, { mode: 0o700 });
    // Made owner-only first: the tools and a shell's redirect keep the mode of a file they truncate.
    for (const f of format.kind === 'custom' ? [ROLES, DUMP] : [ROLES]) await (await ctx.fs.open(path.join(tmp, f), 'wx', 0o600)).close();
    rolesRun = runTool(
      rt,
      'pg_dumpall',
      ['--roles-only', '--no-password', ...(opts.withPasswords ? [] : ['--no-role-passwords'])],
      { out: path.join(tmp, ROLES) },
      dumpFailure('pg_dumpall --roles-only'),
    );
    rolesRun.catch(() => {}); // awaited below; never an unhandled rejection meanwhile
  } catch (e) {
    await dropLogin();
    throw e;
  }
  try {
    const c = await login;
    let manifest: Manifest;
    try {
      await removeStaleDatabases(ctx, rt, await arrays(c, SCRATCH_SQL));
      // No parallel workers: the count runs beside pg_dump and must not take its CPUs (bench/README.md).
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL max_parallel_workers_per_gather = 0');
      const snap = (await c.query(`SELECT pg_export_snapshot() AS id, current_setting('server_version') AS version`)).rows[0];
      const migration = await migrationVersion(c);
      ctx.log.step(`dumping ${roles.database} (pg_dump ${format.kind === 'dir' ? `-Fd -j ${format.jobs}` : '-Fc'}) and the roles`);
      const dumping = runTool(
        rt,
        'pg_dump',
        dumpArgs(format, snap.id, roles.database),
        dumpOutput(format.kind, tmp),
        dumpFailure('pg_dump'),
      );
      const [dump, rolesOut, data, schema] = await Promise.allSettled([
        whileRunning(ctx, `dumping ${roles.database}`, dumping, () => treeBytes(ctx, tmp)),
        rolesRun,
        arrays(c, DATA_SQL),
        arrays(c, SCHEMA_SQL),
      ]);
      await c.query('COMMIT').catch(() => {}); // read-only: nothing to keep; a query's error is reported below
      // A failed query aborts the snapshot pg_dump imports: the query's error is the one that explains.
      if (data.status === 'rejected') throw data.reason;
      if (schema.status === 'rejected') throw schema.reason;
      if (dump.status === 'rejected') throw dump.reason;
      if (rolesOut.status === 'rejected') throw rolesOut.reason;
      const dumpSum = await sealDump(ctx, tmp, format);
      // pg_dumpall creates its file under the umask; a backup holds every row, so owner only.
      await ctx.fs.chmod(path.join(tmp, ROLES), 0o600);
      const rolesSum = await sumFile(ctx, path.join(tmp, ROLES), true);
      manifest = {
        format: 1,
        name: '',
        database: roles.database,
        createdAt: at.toISOString(),
        ...(opts.reason ? { reason: opts.reason } : {}),
        runtime: rt.label,
        serverVersion: String(snap.version),
        migration,
        dump: dumpSum,
        roles: { ...rolesSum, passwords: Boolean(opts.withPasswords) },
        data: dataMap(data.value),
        schema: schema.value.map((r) => String(r[0])),
        ms: 0,
      };
    } finally {
      await c.end().catch(() => {}); // a connection that died has nothing left to close
    }
    let name = backupName(roles.database, at, manifest.migration.version, opts.reason);
    for (
      let i = 2;
      await ctx.fs.stat(path.join(ctx.cfg.backupDir, name)).then(
        () => true,
        () => false,
      );
      i++
    ) {
      name = `${backupName(roles.database, at, manifest.migration.version, opts.reason)}-${i}`;
    }
    manifest.name = name;
    manifest.ms = Math.round(performance.now() - t0);
    await writeAtomic(ctx, path.join(tmp, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
    const dir = path.join(ctx.cfg.backupDir, name);
    await ctx.fs.rename(tmp, dir);
    await syncDir(ctx, ctx.cfg.backupDir);
    return { dir, manifest };
  } catch (e) {
    await rolesRun.catch(() => {}); // it may still be writing into the directory about to go
    await ctx.fs.rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

const configuredFormat = (cfg: Ctx['cfg']): DumpFormat => ({
  kind: cfg.backupFormat,
  jobs: cfg.backupFormat === 'dir' ? cfg.backupJobs : 1,
});

async function isArchive(ctx: Pick<Ctx, 'fs'>, file: string): Promise<boolean> {
  const fh = await ctx.fs.open(file, 'r').catch(() => undefined); // none: not an archive, said by the caller
  if (!fh) return false;
  const head = Buffer.alloc(5);
  await fh.read(head, 0, 5, 0).finally(() => fh.close());
  return head.toString('latin1') === 'PGDMP';
}

/** Checks that pg_dump wrote an archive (an empty stream is not one), then makes it owner-only, flushed, summed. */
async function sealDump(ctx: Pick<Ctx, 'fs'>, tmp: string, format: DumpFormat): Promise<Manifest['dump']> {
  if (format.kind === 'custom') {
    if (!(await isArchive(ctx, path.join(tmp, DUMP))))
      throw new UserError('pg_dump wrote no custom-format archive', 'see pnpm db:logs; run again with --verbose');
    await ctx.fs.chmod(path.join(tmp, DUMP), 0o600);
    const sum = await sumFile(ctx, path.join(tmp, DUMP), true);
    await writeAtomic(ctx, path.join(tmp, SUM), sumLines([sum]));
    return { kind: 'custom', ...sum };
  }
  if (!(await isArchive(ctx, path.join(tmp, DUMP_DIR, 'toc.dat'))))
    throw new UserError(
      'pg_dump wrote no directory-format archive (no toc.dat starting with PGDMP)',
      'see pnpm db:logs; run again with --verbose',
    );
  const files = await dumpDirFiles(ctx, tmp);
  await ctx.fs.chmod(path.join(tmp, DUMP_DIR), 0o700);
  await Promise.all(files.map((f) => ctx.fs.chmod(path.join(tmp, f), 0o600)));
  const sums = await sumFiles(ctx, tmp, files, true);
  await syncDir(ctx, path.join(tmp, DUMP_DIR));
  await writeAtomic(ctx, path.join(tmp, DIR_SUM), sumLines(sums));
  return { kind: 'dir', file: DUMP_DIR, bytes: sums.reduce((n, f) => n + f.bytes, 0), jobs: format.jobs, files: sums };
}

export async function syncDir(ctx: Pick<Ctx, 'fs'>, dir: string): Promise<void> {
  const fh = await ctx.fs.open(dir, 'r').catch(() => undefined); // best effort: the files themselves are flushed
  if (!fh) return;
  await fh.sync().catch(() => {}); // some file systems refuse fsync on a directory
  await fh.close();
}

export interface VerifyResult {
  tables: number;
  rows: number;
  ms: number;
}

/** Proves a backup restores: checksums, then pg_restore into a scratch database that must match the manifest. */
export async function verifyBackup(ctx: Ctx, rt: Runtime, b: Backup, opts: { jobs?: number } = {}): Promise<VerifyResult> {
  const t0 = performance.now();
  const name = b.manifest.name;
  const jobs = restoreJobs(b.manifest, opts.jobs);
  await checkIntegrity(ctx, b);
  if (!(await rt.running()))
    throw new UserError('PostgreSQL is not running, so the backup cannot be restored for verification', 'start it: pnpm db:up');
  const admin = await rt.admin();
  const [, leftovers] = await Promise.all([rt.prepareTools(), admin.query(SCRATCH_SQL)]);
  await removeStaleFiles(ctx);
  await removeStaleDatabases(ctx, rt, leftovers);
  const scratch = scratchDatabase('verify');
  ctx.log.step(`restoring ${name} into the scratch database ${scratch}${jobs > 1 ? ` (${jobs} jobs)` : ''}`);
  await admin.query(`CREATE DATABASE ${ident(scratch)} TEMPLATE template0`);
  try {
    await whileRunning(
      ctx,
      `restoring ${name}`,
      runTool(rt, 'pg_restore', restoreArgs(jobs, scratch), restoreInput(b.manifest, b.dir), (r) => ({
        message: `backup ${name} did not restore`,
        hint: /role "[^"]+" does not exist/.test(r.stderr)
          ? `a role it needs is missing on this server; pnpm db:restore ${name} creates missing roles from its roles.sql`
          : 'do not rely on this backup; take a new one: pnpm db:backup --verify',
      })),
    );
    const data = dataMap(await admin.query(DATA_SQL, scratch));
    const schema = (await admin.query(SCHEMA_SQL, scratch)).map((row) => row[0]);
    const problems = [...dataDiff(b.manifest.data, data), ...schemaDiff(b.manifest.schema, schema)];
    if (problems.length) {
      throw new UserError(
        `backup ${name} restored, but differs from its source: ${problems.slice(0, 3).join('; ')}`,
        'do not rely on this backup; take a new one: pnpm db:backup --verify',
      );
    }
    const tables = Object.keys(b.manifest.data).filter((k) => k.startsWith('table '));
    const result = { tables: tables.length, rows: tables.reduce((n, k) => n + Number(b.manifest.data[k]), 0), ms: 0 };
    await markVerified(ctx, b, { at: ctx.clock().toISOString(), tables: result.tables, rows: result.rows });
    result.ms = Math.round(performance.now() - t0);
    return result;
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${ident(scratch)} WITH (FORCE)`).catch((e) => {
      ctx.log.warn(`could not drop the scratch database ${scratch}: ${(e as Error).message}; drop it by hand`);
    });
  }
}

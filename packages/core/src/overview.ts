import type { Ctx } from './context.ts';
import { withClient } from './pg.ts';
import type { Runtime } from './runtime/runtime.ts';
import { recordedEnvironment } from './environment.ts';
import { listBackups } from './backup/store.ts';
import { databaseLeftovers, fileLeftovers, SCRATCH_SQL, type Leftover } from './backup/leftovers.ts';
import { certificateExpiry, inspectTls, requiredNames } from './tls.ts';
import { replicaLine, type ReplicaStatus } from './replica.ts';

/** What an operator wants at a glance, beside the migration state db:status already shows. */
export interface Overview {
  runtime: string;
  server: { up: boolean; since?: string; version?: string };
  environment?: string;
  database?: { name: string; bytes: number; connections: number };
  lastBackup?: { name: string; at: string; verified: boolean };
  lastVerifiedBackup?: { name: string; at: string };
  certificate?: { notAfter: string };
  /** The hot standby (db:replica): running, standby or promoted, and its lag as the primary sees it. */
  replica?: ReplicaStatus;
  /** What interrupted backups, verifications and restores left, each with the command that removes it. */
  leftovers: Pick<Leftover, 'name' | 'stale' | 'why' | 'fix'>[];
  /** Why a part could not be read, one line each. */
  problems: string[];
}

export async function overview(ctx: Ctx, rt: Runtime): Promise<Overview> {
  const o: Overview = { runtime: rt.label, server: { up: await rt.running() }, problems: [], leftovers: [] };
  const files = fileLeftovers(ctx);
  if (o.server.up) {
    try {
      const t = await rt.target('migrator');
      await withClient({ ...t, applicationName: 'pg-deploy status' }, async (c) => {
        const r = (
          await c.query(`SELECT pg_postmaster_start_time() AS since, current_setting('server_version') AS version,
          pg_database_size(current_database()) AS bytes,
          (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS connections`)
        ).rows[0];
        o.server.since = new Date(r.since).toISOString();
        o.server.version = r.version;
        o.database = { name: t.database, bytes: Number(r.bytes), connections: Number(r.connections) };
        const scratch = await c.query({ text: SCRATCH_SQL, rowMode: 'array' });
        o.leftovers.push(...databaseLeftovers(scratch.rows as unknown[][]));
      });
      o.environment = await recordedEnvironment(t);
    } catch (e) {
      o.problems.push(`the server runs but the migration role cannot log in: ${(e as Error).message}`);
    }
  }
  if (rt.replica) {
    o.replica = await rt.replica.status().catch((e: Error) => {
      o.problems.push(`the standby's state cannot be read: ${e.message}`);
      return undefined;
    });
  }
  o.leftovers.unshift(...(await files));
  const backups = await listBackups(ctx);
  if (backups[0])
    o.lastBackup = { name: backups[0].manifest.name, at: backups[0].manifest.createdAt, verified: Boolean(backups[0].manifest.verified) };
  const v = backups.find((b) => b.manifest.verified);
  if (v) o.lastVerifiedBackup = { name: v.manifest.name, at: v.manifest.createdAt };
  const tls = await inspectTls(ctx, ctx.cfg.sslDir, requiredNames(ctx.cfg.tlsHostnames));
  if (tls.notAfter) o.certificate = { notAfter: tls.notAfter.toISOString() };
  return o;
}

/** `3 d 4 h`, `5 min`: an age for people. */
export function age(fromIso: string, now: Date): string {
  const s = Math.max(0, Math.round((now.getTime() - Date.parse(fromIso)) / 1000));
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

/** The overview as `key   value` lines, in the layout db:status prints. */
export function overviewLines(o: Overview, now: Date): string[] {
  const row = (k: string, v: string) => `${k.padEnd(10)}${v}`;
  const lines = [row('runtime', o.runtime)];
  lines.push(
    row(
      'server',
      o.server.up
        ? `up since ${o.server.since ?? '?'} (${o.server.since ? age(o.server.since, now) : '?'})${o.server.version ? `, PostgreSQL ${o.server.version}` : ''}`
        : 'DOWN (pnpm db:up)',
    ),
  );
  if (o.replica) lines.push(row('replica', replicaLine(o.replica)));
  if (o.environment) lines.push(row('env', o.environment));
  if (o.database)
    lines.push(row('database', `${o.database.name}, ${(o.database.bytes / 1e6).toFixed(1)} MB, ${o.database.connections} connection(s)`));
  lines.push(
    row(
      'backup',
      o.lastBackup
        ? `${o.lastBackup.name}, ${age(o.lastBackup.at, now)} ago, ${o.lastBackup.verified ? 'verified' : 'NOT verified'}`
        : 'none (pnpm db:backup --verify)',
    ),
  );
  if (o.lastBackup && !o.lastBackup.verified)
    lines.push(row('verified', o.lastVerifiedBackup ? `${o.lastVerifiedBackup.name}, ${age(o.lastVerifiedBackup.at, now)} ago` : 'none'));
  if (o.certificate) {
    const { days, fix } = certificateExpiry(new Date(o.certificate.notAfter), now);
    lines.push(row('cert', `expires ${o.certificate.notAfter.slice(0, 10)} (${days} days${fix ? `: renew with ${fix}` : ''})`));
  }
  for (const p of o.problems) lines.push(row('problem', p));
  for (const l of o.leftovers) lines.push(row('leftover', `${l.why}; ${l.fix}`));
  return lines;
}

import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { socketAdmin, type Admin } from '../provision.ts';
import type { Roles } from '../roles.ts';
import { waitFor } from '../wait.ts';
import {
  applySync,
  conninfo,
  passfileLine,
  primaryConninfo,
  readPrimaryView,
  replicationLogin,
  replicationRoleSql,
  STANDBY_NAME,
  standbyAutoConf,
  type EnsureReplicaResult,
  type PromoteResult,
  type Replica,
  type ReplicaStatus,
} from '../replica.ts';
import { literal } from '../pg.ts';
import type { NativeHome } from './native-home.ts';
import { assertPortFree, readPidFile, takeLock, whoIs } from './processes.ts';
import { LOOPBACK } from './runtime.ts';
import { startOptions } from './native-server.ts';

/** The standby's files, in the server's folder beside the primary's: its own data directory, socket, log and passfile. */
export function nativeReplicaPaths(dir: string) {
  const r = path.join(dir, 'replica');
  return {
    dir: r,
    data: path.join(r, 'data'),
    run: path.join(r, 'run'),
    log: path.join(r, 'postgres.log'),
    passfile: path.join(r, 'replication.pgpass'),
  };
}

/** In the old primary's data directory once db:promote promoted the standby: db:up refuses to start it. */
export const FENCE_FILE = 'pg-deploy.fenced';

/** What the standby needs of the primary's runtime. */
export interface PrimaryHandle {
  running(): Promise<boolean>;
  stop(): Promise<unknown>;
  admin(): Promise<Admin>;
  roles(): Promise<Roles>;
  /** A client program of the server's major (pg_basebackup). */
  clientBin(program: string): Promise<string>;
}

/**
 * The native hot standby: a second server on 127.0.0.1:DB_REPLICA_PORT, run as the primary's server
 * user from a base backup taken over verified TLS as the replication role, following the primary
 * through a physical replication slot.
 */
export function nativeReplica(ctx: Ctx, home: NativeHome, primary: PrimaryHandle): Replica & { fenced(): Promise<string | undefined> } {
  const { cfg, exec, fs, log } = ctx;
  const rp = nativeReplicaPaths(home.p.dir);
  const srp = async () => nativeReplicaPaths((await home.sp()).dir);
  const fence = path.join(home.p.data, FENCE_FILE);
  const where = `127.0.0.1:${cfg.replicaPort}`;

  const exists = (f: string) =>
    fs.stat(f).then(
      () => true,
      () => false,
    );
  const hasData = () => exists(path.join(rp.data, 'PG_VERSION'));

  async function pgCtl(args: string[]) {
    const s = await srp();
    // HOME: libpq (the walreceiver) looks for ~/.postgresql/postgresql.crt, and the caller's home (/root) is closed to the server user.
    return exec(await home.bin('pg_ctl', (await home.sp()).dir), ['-D', s.data, ...args], {
      asUser: await home.serverUser(),
      cwd: s.dir,
      env: { HOME: s.dir },
    });
  }

  async function state(): Promise<{ up: boolean; port?: number }> {
    const pf = await readPidFile(ctx, rp.data);
    if (!pf) return { up: false };
    const who = await whoIs(ctx, pf.pid, [rp.data, (await srp()).data, pf.dataDir]);
    return who.kind === 'postmaster' || who.kind === 'unknown' ? { up: true, port: pf.port } : { up: false };
  }

  const admin = async (): Promise<Admin> => socketAdmin(rp.run, cfg.replicaPort, await primary.roles());

  async function assertPortFreeForStandby(): Promise<void> {
    if (cfg.replicaPort === cfg.port) {
      throw new UserError(
        `DB_REPLICA_PORT is ${cfg.replicaPort}, the primary's port (ENV_DB_PORT) too`,
        'set DB_REPLICA_PORT to another free port in .env.local (default: ENV_DB_PORT + 1)',
      );
    }
    await assertPortFree(cfg.replicaPort).catch((e: unknown) => {
      throw e instanceof UserError
        ? new UserError(
            `port ${cfg.replicaPort} on 127.0.0.1 (DB_REPLICA_PORT, the standby's) is taken by another process; nothing was changed`,
            'stop that process, or set DB_REPLICA_PORT to a free port in .env.local',
          )
        : e;
    });
  }

  async function start(): Promise<void> {
    const s = await home.sp();
    const r = await srp();
    await fs.mkdir(r.run, { recursive: true, mode: 0o700 });
    await home.own(r.run);
    const opts = await startOptions(ctx, home, s, { port: cfg.replicaPort, socketDir: r.run });
    log.step(`starting the standby on ${where}`);
    await pgCtl(['start', '-W', '-l', r.log, '-o', opts]);
  }

  /** The standby's last FATAL or PANIC log lines since `from`, if it no longer runs. */
  async function failed(from: number): Promise<string | undefined> {
    if ((await state()).up) return undefined;
    const text = (await fs.readFile(rp.log).catch(() => Buffer.alloc(0))).subarray(from).toString('utf8');
    const fatal = text.split('\n').filter((l) => /\b(FATAL|PANIC)\b/.test(l));
    return fatal.length ? fatal.slice(-2).join(' | ') : undefined;
  }

  /**
   * Until the primary sees the standby streaming, and with DB_SYNC_REPLICA=on as its synchronous standby
   * (each walsender rereads the setting after the reload, a moment later), or the standby died, which its log explains.
   */
  async function waitStreaming(logFrom: number): Promise<void> {
    const su = await primary.admin();
    let seen = '';
    await waitFor(
      ctx,
      'waiting for the standby to stream',
      cfg.upTimeoutMs,
      async () => {
        const why = await failed(logFrom);
        if (why) throw new UserError(`the standby failed to start: ${why}`, `see ${home.shown(rp.log)}`);
        const rows = await su.query(`SELECT state, sync_state FROM pg_stat_replication WHERE application_name = ${literal(STANDBY_NAME)}`);
        seen = rows[0] ? rows[0].join(', ') : 'not connected';
        return rows[0]?.[0] === 'streaming' && (!cfg.syncReplica || rows[0][1] === 'sync');
      },
      () => `the standby did not stream within ${cfg.upTimeoutMs / 1000}s (last state: ${seen}); see ${home.shown(rp.log)}`,
      50,
    );
  }

  const logSize = async () => (await fs.stat(rp.log).catch(() => ({ size: 0 }))).size;

  /** The base backup, into a folder of its own renamed into place once complete: a failure leaves no data directory and no slot. */
  async function build(su: Admin): Promise<ReplicationSecretsCreated> {
    const s = await home.sp();
    const r = await srp();
    const u = await home.serverUser();
    const { login, created } = await replicationLogin(ctx);
    for (const d of [r.dir, r.run]) {
      await fs.mkdir(d, { recursive: true, mode: 0o700 });
      await home.own(d);
    }
    await su.query(replicationRoleSql(login, true));
    // libpq reads the password from here (0600, the server user's): never argv, never the environment.
    const tmpPass = `${r.passfile}.${process.pid}.tmp`;
    await fs.writeFile(tmpPass, passfileLine(login), { mode: 0o600 });
    await home.own(tmpPass);
    await fs.rename(tmpPass, r.passfile);
    const dropSlot = () =>
      su.query(
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${literal(STANDBY_NAME)} AND NOT active`,
      );
    await dropSlot(); // an earlier, failed build's
    const fresh = path.join(r.dir, `data.basebackup-${process.pid}`);
    await fs.rm(fresh, { recursive: true, force: true });
    const caFile = path.join(s.tls, 'ca.crt');
    log.step(`taking a base backup of the primary over verified TLS as ${login.user}`);
    try {
      await exec(
        await primary.clientBin('pg_basebackup'),
        [
          `--pgdata=${fresh}`,
          `--dbname=${conninfo({ host: LOOPBACK, port: cfg.port, user: login.user, passfile: r.passfile, sslmode: 'verify-full', sslrootcert: caFile, application_name: 'pgdeploy_basebackup' })}`,
          '--wal-method=stream',
          `--slot=${STANDBY_NAME}`,
          '--create-slot',
          '--checkpoint=fast',
          '--no-password',
        ],
        {
          asUser: u,
          cwd: r.dir,
          // HOME: libpq looks for a client certificate under ~/.postgresql, and /root is closed to the server user.
          // Nothing from the caller's environment may redirect the session or offer another password.
          env: {
            HOME: r.dir,
            PGPASSWORD: undefined,
            PGPASSFILE: undefined,
            PGSERVICE: undefined,
            PGSSLMODE: undefined,
            PGOPTIONS: undefined,
          },
          failure: { message: 'pg_basebackup failed', hint: 'see the message; nothing was left behind (no data directory, no slot)' },
        },
      );
      await fs.writeFile(path.join(fresh, 'standby.signal'), '', { mode: 0o600 });
      await home.own(path.join(fresh, 'standby.signal'));
      const auto = path.join(fresh, 'postgresql.auto.conf');
      const copied = await fs.readFile(auto, 'utf8').catch(() => '');
      const primaryConn = primaryConninfo({ host: LOOPBACK, port: cfg.port, user: login.user, passfile: r.passfile, caFile });
      await fs.writeFile(auto, standbyAutoConf(copied, primaryConn), { mode: 0o600 });
      await home.own(auto);
      await fs.rename(fresh, r.data);
    } catch (e) {
      await fs.rm(fresh, { recursive: true, force: true });
      await dropSlot().catch(() => undefined); // the primary went meanwhile: the slot goes with the next build
      throw e;
    }
    return created;
  }
  type ReplicationSecretsCreated = Awaited<ReturnType<typeof replicationLogin>>['created'];

  async function status(): Promise<ReplicaStatus | undefined> {
    if (!(await hasData())) return undefined;
    const s: ReplicaStatus = { port: cfg.replicaPort, running: (await state()).up };
    if (s.running) {
      try {
        const [[rec]] = await (await admin()).query('SELECT pg_is_in_recovery()');
        s.role = rec === 'true' ? 'standby' : 'primary';
      } catch (e) {
        s.problem = `the standby does not answer: ${(e as Error).message}`;
      }
    }
    if (s.role !== 'primary' && (await primary.running())) {
      await readPrimaryView(await primary.admin(), s).catch((e: Error) => {
        s.problem = `the primary's view of it cannot be read: ${e.message}`;
      });
    }
    return s;
  }

  const promotedHint = `it is a primary now; keep it, or rebuild the pair as the README says (Failover)`;

  return {
    async fenced() {
      return (await fs.readFile(fence, 'utf8').catch(() => '')).trim() || undefined;
    },
    status,
    async stop() {
      if (!(await state()).up) return false;
      await pgCtl(['stop', '-m', 'fast', '-w', '-t', '60']);
      return true;
    },
    async ensure(): Promise<EnsureReplicaResult> {
      const dir = await home.serverDir();
      const release = await takeLock(ctx, path.join(dir, 'replica.lock'), 'another db:replica', cfg.upTimeoutMs);
      try {
        const built = await hasData();
        if (built && !(await exists(path.join(rp.data, 'standby.signal')))) {
          throw new UserError(`the standby on ${where} was promoted (${home.shown(rp.data)}): it follows no primary`, promotedHint);
        }
        if (!(await primary.running()))
          throw new UserError('the primary is not running, so no standby can follow it', 'start it first: pnpm db:up');
        const su = await primary.admin();
        let action: EnsureReplicaResult['action'] = 'running';
        let createdSecrets: EnsureReplicaResult['createdSecrets'] = [];
        const from = await logSize();
        if (!(await state()).up) {
          await assertPortFreeForStandby();
          if (!built) {
            createdSecrets = await build(su);
            action = 'built';
          } else action = 'started';
          await start();
        }
        const syncChanged = await applySync(su, cfg.syncReplica);
        if (action !== 'running' || syncChanged) await waitStreaming(from);
        return { port: cfg.replicaPort, action, createdSecrets, sync: cfg.syncReplica ? 'on' : 'off', syncChanged, status: await status() };
      } finally {
        await release();
      }
    },
    async promote(confirm): Promise<PromoteResult> {
      if (!(await hasData())) {
        throw new UserError('there is no standby to promote', 'create one first, while the primary runs: pnpm db:replica');
      }
      if (!(await exists(path.join(rp.data, 'standby.signal')))) {
        throw new UserError(`the server on ${where} was promoted already: it is a primary`, promotedHint);
      }
      const primaryUp = await primary.running();
      await confirm(
        `Promote the standby on ${where} to a primary?${primaryUp ? ' The running primary is stopped first.' : ''} The old primary is fenced: it must never come back as a primary.`,
      );
      if (!(await state()).up) {
        await assertPortFreeForStandby();
        await start();
      }
      if (primaryUp) {
        // Two primaries taking writes is the failure a promotion must not cause; a fast shutdown also sends the standby every last WAL record.
        log.step('stopping the old primary');
        await primary.stop();
      }
      await fs
        .writeFile(
          fence,
          `the standby on ${where} was promoted at ${ctx.clock().toISOString()}: this cluster must not come back as a primary\n`,
          { mode: 0o600 },
        )
        .catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') throw e; // no old data directory left: nothing to fence
        });
      const su = await admin();
      const t0 = performance.now();
      log.step(`promoting the standby on ${where}`);
      await su.query('SELECT pg_promote(true, 60)');
      await waitFor(
        ctx,
        'waiting for the promoted server to take writes',
        cfg.upTimeoutMs,
        async () => {
          const [[rec]] = await su.query('SELECT pg_is_in_recovery()');
          if (rec !== 'false') return false;
          await su.query('SELECT txid_current()'); // assigns a transaction id: fails while read-only
          return true;
        },
        () => `the standby on ${where} did not leave recovery within ${cfg.upTimeoutMs / 1000}s`,
        10,
      );
      const ms = Math.round(performance.now() - t0);
      // It follows nothing now, and waits for no standby of its own (ALTER SYSTEM cannot share a statement).
      for (const k of ['primary_conninfo', 'primary_slot_name', 'synchronous_standby_names']) await su.query(`ALTER SYSTEM RESET ${k}`);
      await su.query('SELECT pg_reload_conf()');
      return { port: cfg.replicaPort, ms, stoppedPrimary: primaryUp, fence: home.shown(fence) };
    },
  };
}

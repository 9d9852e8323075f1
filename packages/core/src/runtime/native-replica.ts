import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { socketAdmin, type Admin } from '../provision.ts';
import type { Roles } from '../roles.ts';
import {
  applySync,
  conninfo,
  DROP_IDLE_SLOT_SQL,
  FENCE_FILE,
  passfileLine,
  primaryConninfo,
  replicationLogin,
  replicationRoleSql,
  STANDBY_NAME,
  standbyAutoConf,
  type EnsureReplicaResult,
  type PromoteResult,
  type Replica,
  type ReplicaPrimary,
  type ReplicaStatus,
} from '../replica.ts';
import type { NativeHome } from './native-home.ts';
import { readPidFile, takeLock, whoIs } from './processes.ts';
import { LOOPBACK } from './runtime.ts';
import { startOptions } from './native-server.ts';
import { assertStandbyPortFree, promoteQuestion, promoteStandby, refusal, standbyStatus, waitStreaming } from './standby.ts';

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

/** What the native standby needs of the primary's runtime besides what every standby does. */
export interface PrimaryHandle extends ReplicaPrimary {
  stop(): Promise<unknown>;
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

  /** Until the standby streams (see waitStreaming), or it died, which its log explains. */
  async function streaming(logFrom: number): Promise<void> {
    await waitStreaming(ctx, await primary.admin(), {
      sync: cfg.syncReplica,
      see: `see ${home.shown(rp.log)}`,
      intervalMs: 50,
      died: async () => {
        const why = await failed(logFrom);
        if (why) throw new UserError(`the standby failed to start: ${why}`, `see ${home.shown(rp.log)}`);
      },
    });
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
    const dropSlot = () => su.query(DROP_IDLE_SLOT_SQL);
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
    return standbyStatus(cfg.replicaPort, (await state()).up, admin, primary);
  }

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
          throw refusal.promoted(where, home.shown(rp.data));
        }
        if (!(await primary.running())) throw refusal.primaryDown();
        const su = await primary.admin();
        let action: EnsureReplicaResult['action'] = 'running';
        let createdSecrets: EnsureReplicaResult['createdSecrets'] = [];
        const from = await logSize();
        if (!(await state()).up) {
          await assertStandbyPortFree(cfg);
          if (!built) {
            createdSecrets = await build(su);
            action = 'built';
          } else action = 'started';
          await start();
        }
        const syncChanged = await applySync(su, cfg.syncReplica);
        if (action !== 'running' || syncChanged) await streaming(from);
        return { port: cfg.replicaPort, action, createdSecrets, sync: cfg.syncReplica ? 'on' : 'off', syncChanged, status: await status() };
      } finally {
        await release();
      }
    },
    async promote(confirm): Promise<PromoteResult> {
      if (!(await hasData())) throw refusal.noStandby();
      if (!(await exists(path.join(rp.data, 'standby.signal')))) throw refusal.promotedAlready(where);
      const primaryUp = await primary.running();
      await confirm(promoteQuestion(where, primaryUp));
      if (!(await state()).up) {
        await assertStandbyPortFree(cfg);
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
      const ms = await promoteStandby(ctx, await admin(), where);
      return { port: cfg.replicaPort, ms, stoppedPrimary: primaryUp, fence: home.shown(fence) };
    },
  };
}

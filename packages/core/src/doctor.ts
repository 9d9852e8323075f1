import tls from 'node:tls';
import type { Ctx } from './context.ts';
import { readSecret, readSecrets, SECRET_NAMES } from './secrets.ts';
import { certificateExpiry, inspectTls, requiredNames } from './tls.ts';
import { connect, literal, type Target } from './pg.ts';
import { driftError, tryLogin } from './provision.ts';
import type { Runtime } from './runtime/runtime.ts';
import { databaseLeftovers, fileLeftovers, SCRATCH_SQL } from './backup/leftovers.ts';
import { permissionProblems } from './preflight.ts';
import { archivingHealth } from './backup/archiving.ts';

export interface Check {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
  fix?: string;
}

/** Runs one check; a check that throws is a failure with its message, never a crash of the doctor. */
async function check(out: Check[], name: string, fn: () => Promise<Omit<Check, 'name'>>): Promise<void> {
  try {
    out.push({ name, ...(await fn()) });
  } catch (e) {
    const err = e as Error & { hint?: string };
    out.push({ name, status: 'fail', detail: err.message, fix: err.hint });
  }
}

/** The certificate the server actually presents, over PostgreSQL's SSLRequest: what clients will see. */
export async function servedCertificate(t: Target): Promise<tls.PeerCertificate> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const sock = net.connect(t.port, '127.0.0.1');
    sock.setTimeout(5000, () => sock.destroy(new Error('timed out asking for TLS')));
    sock.once('error', reject);
    sock.once('connect', () => {
      const req = Buffer.alloc(8);
      req.writeInt32BE(8, 0);
      req.writeInt32BE(80877103, 4); // SSLRequest
      sock.write(req);
    });
    sock.once('data', (b) => {
      if (b.toString() !== 'S') return reject(new Error('the server refused TLS'));
      // Not verified here on purpose: an expired or foreign certificate is exactly what we want to see.
      const s = tls.connect({ socket: sock, rejectUnauthorized: false, servername: 'localhost' }, () => {
        const cert = s.getPeerCertificate();
        s.destroy();
        resolve(cert);
      });
      s.once('error', reject);
    });
  });
}

/** Every security promise the README makes, checked against the files and the running server. */
export async function doctor(ctx: Ctx, rt: Runtime): Promise<Check[]> {
  const out: Check[] = [];
  const { cfg } = ctx;

  // The same check db:up makes before it starts anything (preflight).
  await check(out, 'file permissions', async () => {
    const loose = await permissionProblems(ctx);
    return loose.length
      ? { status: 'fail', detail: loose.map((l) => l.message).join('; '), fix: loose.map((l) => l.fix).join(' && ') }
      : { status: 'ok', detail: 'the secrets folder 0700, the secrets, ca.key and server.key 0600' };
  });

  await check(out, 'secret files', async () => {
    for (const n of SECRET_NAMES) await readSecret(ctx, n);
    await readSecrets(ctx);
    return { status: 'ok', detail: `${SECRET_NAMES.length} files, 0600, in a 0700 folder, no trailing newlines` };
  });

  const names = requiredNames(cfg.tlsHostnames);
  await check(out, 'certificate files', async () => {
    const st = await inspectTls(ctx, cfg.sslDir, names);
    if (!st.notAfter) return { status: 'fail', detail: st.problems.join('; '), fix: 'pnpm db:secure' };
    const { days, state, fix } = certificateExpiry(st.notAfter, ctx.clock());
    if (state === 'critical') return { status: 'fail', detail: `server.crt expires in ${days} days (${st.notAfter.toISOString()})`, fix };
    if (!st.serverOk) return { status: 'fail', detail: st.problems.join('; '), fix: 'pnpm db:secure' };
    if (state === 'soon') return { status: 'warn', detail: `server.crt expires in ${days} days`, fix };
    return { status: 'ok', detail: `EC P-256, covers ${names.join(', ')}, ${days} days left` };
  });

  const up = await rt.running();
  await check(out, 'leftovers', async () => {
    const all = [...(await fileLeftovers(ctx)), ...(up ? databaseLeftovers(await (await rt.admin()).query(SCRATCH_SQL)) : [])];
    if (!all.length)
      return { status: 'ok', detail: `nothing left by interrupted backups, verifications or restores${up ? '' : ' in the backup folder'}` };
    return { status: 'warn', detail: all.map((l) => l.why).join('; '), fix: all.map((l) => l.fix).join('; ') };
  });

  if (!up) {
    out.push({ name: 'server', status: 'fail', detail: 'PostgreSQL is not running', fix: 'pnpm db:up' });
    return out;
  }
  const app = await rt.target('app');

  await check(out, 'served certificate', async () => {
    const cert = await servedCertificate(app);
    const { days: left, state, fix } = certificateExpiry(new Date(cert.valid_to), ctx.clock());
    if (state === 'critical')
      return { status: 'fail', detail: `the server presents a certificate that expires in ${left} days (${cert.valid_to})`, fix };
    if (state === 'soon') return { status: 'warn', detail: `expires in ${left} days`, fix };
    return { status: 'ok', detail: `valid until ${new Date(cert.valid_to).toISOString().slice(0, 10)}` };
  });

  const roles = await readSecrets(ctx);
  await check(out, 'verified TLS login (app)', async () => {
    const c = await connect(app).catch((e) => {
      throw driftError(e, 'app', roles.app.user) ?? e;
    });
    try {
      const r = await c.query('SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      return { status: 'ok', detail: `verify-full as ${app.user}@${app.host}, ${r.rows[0].version}` };
    } finally {
      await c.end();
    }
  });

  await check(out, 'verified TLS login (migrations)', async () => {
    await tryLogin(await rt.target('migrator')).catch((e) => {
      throw driftError(e, 'migrate', roles.migrator.user) ?? e;
    });
    return { status: 'ok', detail: 'verify-full as the schema owner' };
  });

  await check(out, 'plaintext TCP refused', async () => {
    const { default: pg } = await import('pg');
    const c = new pg.Client({
      host: '127.0.0.1',
      port: app.port,
      user: app.user,
      password: app.password,
      database: app.database,
      ssl: false,
      connectionTimeoutMillis: 5000,
    });
    try {
      await c.connect();
      await c.end();
      return {
        status: 'fail',
        detail: 'a plaintext login succeeded',
        fix: 'restore database/infra/config/pg_hba.conf (hostnossl ... reject)',
      };
    } catch (e) {
      return /no encryption/.test((e as Error).message)
        ? { status: 'ok', detail: 'rejected by pg_hba.conf (hostnossl reject)' }
        : { status: 'fail', detail: (e as Error).message };
    }
  });

  await check(out, 'superuser refused over TCP', async () => {
    try {
      await tryLogin({ ...app, user: roles.admin.user, password: roles.admin.password });
      return { status: 'fail', detail: `${roles.admin.user} logged in over TCP`, fix: 'restore database/infra/config/pg_hba.conf' };
    } catch (e) {
      return /pg_hba\.conf rejects/.test((e as Error).message)
        ? { status: 'ok', detail: `${roles.admin.user} only on the server's socket` }
        : { status: 'fail', detail: (e as Error).message };
    }
  });

  const admin = await rt.admin();
  await check(out, 'server settings', async () => {
    const want: Record<string, (v: string) => boolean> = {
      ssl: (v) => v === 'on',
      ssl_min_protocol_version: (v) => v === 'TLSv1.2' || v === 'TLSv1.3',
      password_encryption: (v) => v === 'scram-sha-256',
      log_connections: (v) => v === 'on',
      log_disconnections: (v) => v === 'on',
    };
    // As the superuser: ssl_* settings are hidden from ordinary roles.
    const rows = await admin.query(`SELECT name, setting FROM pg_settings WHERE name IN (${Object.keys(want).map(literal).join(', ')})`);
    const bad = rows.filter(([k, v]) => !want[k](v)).map(([k, v]) => `${k}=${v}`);
    return bad.length
      ? { status: 'fail', detail: bad.join(', '), fix: 'restore database/infra/config/postgresql.conf' }
      : { status: 'ok', detail: 'ssl on, TLSv1.2+, scram-sha-256, connections logged' };
  });

  // The WAL archive's continuity: a failing archive_command makes pg_wal grow until the disk is full.
  await check(out, 'WAL archiving', () => archivingHealth(ctx, rt, admin));

  await check(out, 'stored passwords', async () => {
    const rows = await admin.query(
      "SELECT rolname FROM pg_authid WHERE rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'",
    );
    return rows.length
      ? { status: 'fail', detail: `not SCRAM: ${rows.map((r) => r[0]).join(', ')}`, fix: 'pnpm db:secrets:rotate --all' }
      : { status: 'ok', detail: 'every stored password is a SCRAM-SHA-256 verifier' };
  });

  await check(out, 'least privilege', async () => {
    const rows = await admin.query(
      `SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname IN (${literal(roles.app.user)}, ${literal(roles.migrator.user)})`,
    );
    const bad = rows.filter((r) => r.slice(1).some((v) => v === 't' || v === 'true'));
    return bad.length
      ? {
          status: 'fail',
          detail: `${bad.map((r) => r[0]).join(', ')} can create roles or databases, or is a superuser`,
          fix: `ALTER ROLE ... NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS`,
        }
      : { status: 'ok', detail: `${roles.app.user} and ${roles.migrator.user} are plain roles; ${roles.admin.user} only on the socket` };
  });

  await check(out, 'client authentication rules', async () => {
    const rows = await admin.query("SELECT type, auth_method, coalesce(error, '') FROM pg_hba_file_rules");
    const errors = rows.filter((r) => r[2]);
    const trust = rows.filter((r) => r[0] !== 'local' && r[1] === 'trust');
    const reject = rows.some((r) => r[0] === 'hostnossl' && r[1] === 'reject');
    if (errors.length) return { status: 'fail', detail: `pg_hba.conf has errors: ${errors.map((r) => r[2]).join('; ')}` };
    if (trust.length)
      return { status: 'fail', detail: 'a network line uses trust', fix: 'use scram-sha-256 in database/infra/config/pg_hba.conf' };
    if (!reject) return { status: 'fail', detail: 'no explicit hostnossl reject line', fix: 'restore database/infra/config/pg_hba.conf' };
    return { status: 'ok', detail: 'no trust on the network; plaintext rejected; hostssl scram-sha-256' };
  });

  return out;
}

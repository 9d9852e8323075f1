import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { isIP } from 'node:net';
import { connect, type Target } from '@dbkit/core/pg';
import { nativeRuntime } from '@dbkit/core/runtime/native';
import { rotate } from '@dbkit/core/rotate';
import { ensureTls, requiredNames } from '@dbkit/core/tls';
import {
  makeProject,
  removeProject,
  startProject,
  cli,
  ok,
  run,
  appTarget,
  ownerTarget,
  readSecretFile,
  type Project,
} from './setup/project.ts';
import { testCtx } from './setup/ctx.ts';

interface C {
  p: Project;
}

const EXTRA = 'db.example.test';
const sec = suite<C>('security of a running server');

sec.before(async (c) => {
  c.p = await makeProject();
  c.p.env.DB_TLS_HOSTNAMES = EXTRA;
  await startProject(c.p);
  await ok(['db:migrate'], c.p.env);
});
sec.after(async (c) => removeProject(c.p));

/** A pg client that connects to 127.0.0.1 but verifies the certificate as `name`, against `ca`. */
async function verifyAs(t: Target, name: string, ca: string): Promise<void> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: t.port,
    user: t.user,
    password: t.password,
    database: t.database,
    connectionTimeoutMillis: 5000,
    ssl: { ca, host: name, servername: isIP(name) ? undefined : name, rejectUnauthorized: true },
  });
  try {
    await client.connect();
  } finally {
    await client.end().catch(() => {});
  }
}

/** libpq itself (psql) with verify-full: PGHOST is the name checked, PGHOSTADDR where it connects. */
function psqlAs(c: C, t: Target, name: string, extra: Record<string, string> = {}) {
  return run('psql', ['-X', '-At', '-c', 'SELECT 1'], {
    PGHOST: name,
    PGHOSTADDR: '127.0.0.1',
    PGPORT: String(t.port),
    PGUSER: t.user,
    PGDATABASE: t.database,
    PGPASSWORD: t.password,
    PGSSLMODE: 'verify-full',
    PGSSLROOTCERT: path.join(c.p.sslDir, 'ca.crt'),
    PGCONNECT_TIMEOUT: '5',
    ...extra,
  });
}

const adminTarget = async (p: Project): Promise<Target> => ({
  host: path.join(p.nativeDir, 'run'),
  port: p.port,
  database: 'postgres',
  user: await readSecretFile(p, 'postgres_user'),
  password: await readSecretFile(p, 'postgres_password'),
});

sec('verify-full succeeds for localhost, 127.0.0.1, api-db and every DB_TLS_HOSTNAMES name', async (c) => {
  const t = await appTarget(c.p);
  for (const name of ['localhost', '127.0.0.1', 'api-db', EXTRA]) {
    await verifyAs(t, name, t.ca!);
    const r = await psqlAs(c, t, name);
    assert.is(r.code, 0, `${name}: ${r.stderr}`);
  }
});

sec('verify-full fails for a wrong host name', async (c) => {
  const t = await appTarget(c.p);
  const err = await verifyAs(t, 'wrong.example.test', t.ca!).catch((e) => e);
  assert.match(String(err?.message), /does not match|altnames/i);
  const r = await psqlAs(c, t, 'wrong.example.test');
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /does not match host name/);
});

sec('verify-full fails against another CA', async (c) => {
  const other = path.join(c.p.dir, 'other-ca');
  await ensureTls(testCtx({}), { sslDir: other, names: requiredNames([]), days: 30, forceCa: false, forceServer: false });
  const t = await appTarget(c.p);
  const err = await verifyAs(t, 'localhost', await fs.readFile(path.join(other, 'ca.crt'), 'utf8')).catch((e) => e);
  assert.match(String(err?.message), /self.signed|unable to verify|certificate/i);
  const r = await psqlAs(c, t, 'localhost', { PGSSLROOTCERT: path.join(other, 'ca.crt') });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /certificate verify failed/);
});

sec('TLS 1.1 is refused while TLS 1.2 is accepted', async (c) => {
  // OpenSSL 3 clients refuse TLS 1.1 at the default security level; level 0 lets us offer it.
  const s = (v: string) =>
    run(
      'openssl',
      ['s_client', '-starttls', 'postgres', '-connect', `127.0.0.1:${c.p.port}`, v, '-cipher', 'DEFAULT:@SECLEVEL=0'],
      {},
      { input: '' },
    );
  const old = await s('-tls1_1');
  assert.is.not(old.code, 0, old.stdout);
  const good = await s('-tls1_2');
  assert.is(good.code, 0, good.stderr);
  assert.match(good.stdout, /Protocol\s*: TLSv1\.2/);
});

sec('the superuser cannot log in over TCP, even with TLS and the right password', async (c) => {
  const t = await appTarget(c.p);
  const admin = await adminTarget(c.p);
  const err = await connect({ ...t, user: admin.user, password: admin.password }).catch((e) => e);
  assert.match(String(err?.message), /pg_hba\.conf rejects connection .*user "postgres"/);
  // ...but it still administers over the socket.
  const s = await connect(admin);
  await s.end();
});

sec('every stored password is a SCRAM-SHA-256 verifier', async (c) => {
  const s = await connect(await adminTarget(c.p));
  try {
    const { rows } = await s.query('SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL');
    assert.ok(rows.length >= 3);
    for (const r of rows) assert.match(r.rolpassword, /^SCRAM-SHA-256\$4096:/, r.rolname);
  } finally {
    await s.end();
  }
});

sec('the application role cannot create roles or databases, and cannot change the schema', async (c) => {
  const a = await connect(await appTarget(c.p));
  try {
    for (const sql of ['CREATE ROLE intruder', 'CREATE DATABASE intruder', 'CREATE TABLE intruder (id int)', 'DROP TABLE accounts']) {
      const err = await a.query(sql).catch((e) => e);
      assert.match(String(err?.message), /permission denied|must be owner/, sql);
    }
    // It can use what migrations made, through default privileges.
    await a.query("INSERT INTO accounts (email) VALUES ('a@example.test')");
    assert.is((await a.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 1);
  } finally {
    await a.end();
  }
});

sec('the migration role owns the schema but is no superuser', async (c) => {
  const m = await connect(await ownerTarget(c.p));
  try {
    const { rows } = await m.query('SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user');
    assert.equal(rows[0], { rolsuper: false, rolcreaterole: false, rolcreatedb: false });
    const o = await m.query("SELECT tableowner FROM pg_tables WHERE tablename = 'accounts'");
    assert.is(o.rows[0].tableowner, await readSecretFile(c.p, 'migrate_user'));
    const err = await m.query('CREATE ROLE intruder').catch((e) => e);
    assert.match(String(err?.message), /permission denied/);
  } finally {
    await m.end();
  }
});

sec('db:doctor passes every check on a fresh deploy and prints no secret', async (c) => {
  const r = await cli(['db:doctor', '--json'], c.p.env);
  assert.is(r.code, 0, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout);
  assert.ok(out.ok);
  assert.ok(out.checks.length >= 10);
  for (const n of ['postgres_password', 'app_password', 'migrate_password']) assert.not.ok(r.stdout.includes(await readSecretFile(c.p, n)));
});

sec('rotation: the old password is refused and the new one works', async (c) => {
  const before = await appTarget(c.p);
  await ok(['db:secrets:rotate'], c.p.env);
  const after = await appTarget(c.p);
  assert.is.not(after.password, before.password);
  const err = await connect(before).catch((e) => e);
  assert.match(String(err?.message), /password authentication failed/);
  await (await connect(after)).end();
});

sec('a rotation whose file replacement fails leaves the old password working and the file unchanged', async (c) => {
  const before = await appTarget(c.p);
  const ctx = testCtx(c.p.env);
  const file = path.join(c.p.secretsDir, 'app_password');
  const inode = (await fs.stat(file)).ino;
  // The disk fails exactly when the new password would replace the old one.
  const copyFile = (async (from: string, to: string) => {
    if (to === file && from.endsWith('.new')) throw Object.assign(new Error('EIO: simulated'), { code: 'EIO' });
    return fs.copyFile(from, to);
  }) as typeof fs.copyFile;
  const bctx = { ...ctx, fs: { ...fs, copyFile } as typeof fs };
  const err = await rotate(bctx, nativeRuntime(bctx), 'app', { fromFile: false }).catch((e) => e);
  assert.match(String(err?.message), /could not replace app_password.*nothing was changed/);
  assert.is(await readSecretFile(c.p, 'app_password'), before.password);
  await (await connect(before)).end();
  assert.equal(
    (await fs.readdir(c.p.secretsDir)).filter((f) => /\.(new|old)$/.test(f)),
    [],
  );
  assert.is((await fs.stat(file)).ino, inode);
});

sec('a rotation replaces the file in place, so a bind mount of it (Compose secrets) sees the new password', async (c) => {
  const file = path.join(c.p.secretsDir, 'app_password');
  const inode = (await fs.stat(file)).ino;
  await ok(['db:secrets:rotate'], c.p.env);
  const st = await fs.stat(file);
  assert.is(st.ino, inode);
  assert.is(st.mode & 0o777, 0o600);
  await (await connect(await appTarget(c.p))).end();
});

sec('a changed secret file is drift: db:up and db:doctor say so, and --from-file fixes it', async (c) => {
  const file = path.join(c.p.secretsDir, 'app_password');
  await fs.writeFile(file, 'a-new-password-typed-by-hand', { mode: 0o600 });
  const up = await cli(['db:up'], c.p.env);
  assert.is(up.code, 1);
  assert.match(up.stderr, /^error: database\/infra\/secrets\/app_password no longer matches the password of role app/m);
  assert.match(up.stderr, /pnpm db:secrets:rotate app --from-file/);
  assert.not.ok(up.stderr.includes('a-new-password-typed-by-hand'));
  const doc = await cli(['db:doctor'], c.p.env);
  assert.is(doc.code, 1);
  assert.match(doc.stdout, /FAIL\s+verified TLS login \(app\)\s+database\/infra\/secrets\/app_password no longer matches/);
  await ok(['db:secrets:rotate', 'app', '--from-file'], c.p.env);
  await ok(['db:up'], c.p.env);
});

sec('an expired certificate fails db:doctor while pg_isready still says ready', async (c) => {
  await makeExpiredServerCert(c.p);
  const ctx = testCtx(c.p.env);
  await nativeRuntime(ctx).reloadTls();
  const ready = await run('pg_isready', ['-h', '127.0.0.1', '-p', String(c.p.port)], {});
  assert.is(ready.code, 0, ready.stdout);
  const r = await cli(['db:doctor'], c.p.env);
  assert.is(r.code, 1);
  assert.match(r.stdout, /FAIL\s+served certificate\s+the server presents a certificate that expires in -\d+ days/);
  assert.match(r.stdout, /FAIL\s+certificate files/);
  // db:secure sees it and re-issues; the server reloads it without a restart.
  const s = await ok(['db:secure'], c.p.env);
  assert.match(s.stdout, /issued a new server certificate from the existing CA.*the running server reloaded it/);
  await ok(['db:doctor'], c.p.env);
});

sec(
  'an expiring or expired server certificate is renewed with --renew, which keeps the CA: db:up and db:status never advise --force',
  async (c) => {
    const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
    await makeExpiredServerCert(c.p, stamp(Date.now() - 86_400_000), stamp(Date.now() + 20 * 86_400_000));
    const up = await ok(['db:up'], c.p.env);
    assert.match(up.stderr, /the server certificate expires in \d+ days; renew it: pnpm db:secure --renew\b/);
    await makeExpiredServerCert(c.p);
    const st = await cli(['db:status'], c.p.env);
    assert.match(st.stdout, /^cert\s+expires 2020-02-01 \(-\d+ days: renew with pnpm db:secure --renew\)$/m);
    for (const out of [up.stdout, up.stderr, st.stdout, st.stderr]) assert.not.ok(out.includes('--force'), out);
    const ca = await fs.readFile(path.join(c.p.sslDir, 'ca.crt'), 'utf8');
    await ok(['db:secure', '--renew'], c.p.env);
    assert.is(await fs.readFile(path.join(c.p.sslDir, 'ca.crt'), 'utf8'), ca);
    await ok(['db:doctor'], c.p.env);
  },
);

sec.run();

/** A server certificate from the project's CA, by default one whose validity ended in 2020 (`openssl ca` takes explicit dates). */
async function makeExpiredServerCert(p: Project, start = '20200101000000Z', end = '20200201000000Z'): Promise<void> {
  const d = path.join(p.dir, 'expired');
  await fs.mkdir(d, { recursive: true });
  await fs.writeFile(path.join(d, 'index.txt'), '');
  await fs.writeFile(path.join(d, 'serial'), '1000\n');
  await fs.writeFile(
    path.join(d, 'ca.cnf'),
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${d}/index.txt\nnew_certs_dir = ${d}\nserial = ${d}/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = api-db\n[ext]\nbasicConstraints = critical, CA:FALSE\nsubjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1, DNS:api-db, DNS:${EXTRA}\n`,
  );
  const sh = (args: string[]) => run('openssl', args, {}).then((r) => assert.is(r.code, 0, r.stderr));
  await sh([
    'req',
    '-new',
    '-config',
    path.join(d, 'ca.cnf'),
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    path.join(d, 'server.key'),
    '-out',
    path.join(d, 'server.csr'),
  ]);
  await sh([
    'ca',
    '-batch',
    '-config',
    path.join(d, 'ca.cnf'),
    '-cert',
    path.join(p.sslDir, 'ca.crt'),
    '-keyfile',
    path.join(p.sslDir, 'ca.key'),
    '-in',
    path.join(d, 'server.csr'),
    '-out',
    path.join(d, 'server.crt'),
    '-startdate',
    start,
    '-enddate',
    end,
    '-extfile',
    path.join(d, 'ca.cnf'),
    '-extensions',
    'ext',
    '-notext',
  ]);
  await fs.copyFile(path.join(d, 'server.crt'), path.join(p.sslDir, 'server.crt'));
  await fs.copyFile(path.join(d, 'server.key'), path.join(p.sslDir, 'server.key'));
  await fs.chmod(path.join(p.sslDir, 'server.key'), 0o600);
}

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { ensureTls, inspectTls, requiredNames, tlsFiles } from '@dbkit/core/tls';
import { testCtx } from './setup/ctx.ts';

interface C {
  dir: string;
  ctx: ReturnType<typeof testCtx>;
}

const tls = suite<C>('db:secure certificates');
const names = requiredNames(['db.example.com', '10.1.2.3']);

tls.before(async (c) => {
  c.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-tls-'));
  c.ctx = testCtx({});
  await ensureTls(c.ctx, { sslDir: c.dir, names, days: 42, forceCa: false, forceServer: false });
});
tls.after(async (c) => fs.rm(c.dir, { recursive: true, force: true }));

const cert = async (c: C, f = 'server.crt') => new X509Certificate(await fs.readFile(path.join(c.dir, f)));

tls('the server certificate is X.509 v3, CA:FALSE, EC P-256, for serverAuth', async (c) => {
  const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', path.join(c.dir, 'server.crt')], { encoding: 'utf8' });
  assert.match(text, /Version: 3 \(0x2\)/);
  assert.match(text, /CA:FALSE/);
  assert.match(text, /TLS Web Server Authentication/);
  const x = await cert(c);
  assert.is(x.ca, false);
  assert.is(x.publicKey.asymmetricKeyType, 'ec');
  assert.is(x.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
});

tls('it covers localhost, 127.0.0.1, api-db and every DB_TLS_HOSTNAMES name as subjectAltNames', async (c) => {
  const x = await cert(c);
  for (const n of ['DNS:localhost', 'IP Address:127.0.0.1', 'DNS:api-db', 'DNS:db.example.com', 'IP Address:10.1.2.3']) {
    assert.ok(x.subjectAltName?.includes(n), `${n} in ${x.subjectAltName}`);
  }
  assert.is(x.checkHost('wrong.example.com'), undefined);
});

tls('it is valid for the configured number of days and signed by the local CA', async (c) => {
  const x = await cert(c);
  const days = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / 86_400_000;
  assert.is(Math.round(days), 42);
  const ca = await cert(c, 'ca.crt');
  assert.ok(ca.ca);
  assert.ok(x.verify(ca.publicKey));
});

tls('the CA and the server certificate have serials of their own (one issuer, never one serial twice)', async (c) => {
  const [ca, server] = [await cert(c, 'ca.crt'), await cert(c)];
  assert.is(server.issuer, ca.subject);
  assert.is.not(server.serialNumber, ca.serialNumber);
});

tls('keys are 0600 and the folder is 0700', async (c) => {
  for (const k of ['ca.key', 'server.key']) assert.is((await fs.stat(path.join(c.dir, k))).mode & 0o777, 0o600);
  assert.is((await fs.stat(c.dir)).mode & 0o777, 0o700);
  assert.equal((await fs.readdir(c.dir)).sort(), ['ca.crt', 'ca.key', 'server.crt', 'server.key']);
});

tls('valid files are kept', async (c) => {
  const before = await fs.readFile(tlsFiles(c.dir).serverCrt, 'utf8');
  const r = await ensureTls(c.ctx, { sslDir: c.dir, names, days: 42, forceCa: false, forceServer: false });
  assert.equal(r, { madeCa: false, madeServer: false });
  assert.is(await fs.readFile(tlsFiles(c.dir).serverCrt, 'utf8'), before);
});

tls('a new host name re-issues the server certificate from the same CA', async (c) => {
  const ca = await fs.readFile(tlsFiles(c.dir).caCrt, 'utf8');
  const inodes = await Promise.all([tlsFiles(c.dir).serverKey, tlsFiles(c.dir).serverCrt].map(async (f) => (await fs.stat(f)).ino));
  const more = [...names, 'db2.example.com'];
  assert.not.ok((await inspectTls(c.ctx, c.dir, more)).serverOk);
  const r = await ensureTls(c.ctx, { sslDir: c.dir, names: more, days: 42, forceCa: false, forceServer: false });
  assert.equal(r, { madeCa: false, madeServer: true });
  assert.is(await fs.readFile(tlsFiles(c.dir).caCrt, 'utf8'), ca);
  assert.ok((await cert(c)).subjectAltName?.includes('DNS:db2.example.com'));
  // Same inodes, new content: a container's file bind mount of them sees the renewal.
  assert.equal(await Promise.all([tlsFiles(c.dir).serverKey, tlsFiles(c.dir).serverCrt].map(async (f) => (await fs.stat(f)).ino)), inodes);
  assert.is((await fs.stat(tlsFiles(c.dir).serverKey)).mode & 0o777, 0o600);
});

tls('a server certificate from another CA is found and replaced', async (c) => {
  const other = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-tls-other-'));
  try {
    await ensureTls(c.ctx, { sslDir: other, names, days: 42, forceCa: false, forceServer: false });
    await fs.copyFile(tlsFiles(other).serverCrt, tlsFiles(c.dir).serverCrt);
    await fs.copyFile(tlsFiles(other).serverKey, tlsFiles(c.dir).serverKey);
    const st = await inspectTls(c.ctx, c.dir, names);
    assert.not.ok(st.serverOk);
    assert.ok(
      st.problems.some((p) => /not signed by ca\.crt/.test(p)),
      st.problems.join(),
    );
    await ensureTls(c.ctx, { sslDir: c.dir, names, days: 42, forceCa: false, forceServer: false });
    assert.ok((await inspectTls(c.ctx, c.dir, names)).serverOk);
  } finally {
    await fs.rm(other, { recursive: true, force: true });
  }
});

tls('a certificate that expires within 7 days is not valid, and an injected clock shows it', async (c) => {
  const later = testCtx({}, { clock: () => new Date(Date.now() + 40 * 86_400_000) });
  const st = await inspectTls(later, c.dir, names);
  assert.not.ok(st.serverOk);
  assert.ok(st.problems.some((p) => /expires/.test(p)));
});

tls('--force makes a new CA', async (c) => {
  const ca = await fs.readFile(tlsFiles(c.dir).caCrt, 'utf8');
  const r = await ensureTls(c.ctx, { sslDir: c.dir, names, days: 42, forceCa: true, forceServer: false });
  assert.equal(r, { madeCa: true, madeServer: true });
  assert.is.not(await fs.readFile(tlsFiles(c.dir).caCrt, 'utf8'), ca);
});

tls.run();

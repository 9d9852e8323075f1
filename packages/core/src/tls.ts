import path from 'node:path';
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { Ctx } from './context.ts';
import { place } from './place.ts';

/** The names every server certificate covers. */
export function requiredNames(extra: readonly string[]): string[] {
  return [...new Set(['localhost', '127.0.0.1', '::1', 'api-db', ...extra])];
}

export const CA_DAYS = 3650;

export interface TlsFiles {
  caCrt: string;
  caKey: string;
  serverCrt: string;
  serverKey: string;
}

export function tlsFiles(sslDir: string): TlsFiles {
  return {
    caCrt: path.join(sslDir, 'ca.crt'),
    caKey: path.join(sslDir, 'ca.key'),
    serverCrt: path.join(sslDir, 'server.crt'),
    serverKey: path.join(sslDir, 'server.key'),
  };
}

export interface TlsState {
  caOk: boolean;
  serverOk: boolean;
  problems: string[];
  notAfter?: Date;
}

const DAY = 86_400_000;

export interface CertificateExpiry {
  days: number; // negative once expired
  state: 'ok' | 'soon' | 'critical'; // critical under 7 days, soon under 30
  fix?: string; // --renew, which keeps the CA the clients trust
}

/** How soon a certificate expires, and the fix: the one place that decides. */
export function certificateExpiry(notAfter: Date, now: Date): CertificateExpiry {
  const days = Math.floor((notAfter.getTime() - now.getTime()) / DAY);
  if (!(days < 30)) return { days, state: 'ok' };
  return { days, state: days < 7 ? 'critical' : 'soon', fix: 'pnpm db:secure --renew' };
}

/** Checks the CA and server certificate as PostgreSQL and verify-full clients will. */
export async function inspectTls(ctx: Pick<Ctx, 'fs' | 'clock'>, sslDir: string, names: readonly string[]): Promise<TlsState> {
  const f = tlsFiles(sslDir);
  const read = (p: string) => ctx.fs.readFile(p, 'utf8').catch(() => undefined); // missing or unreadable: a problem below
  const [caCrt, caKey, crt, key] = await Promise.all([read(f.caCrt), read(f.caKey), read(f.serverCrt), read(f.serverKey)]);
  const problems: string[] = [];
  const now = ctx.clock().getTime();
  let ca: X509Certificate | undefined;
  let caOk = false;
  if (!caCrt || !caKey) problems.push('the CA certificate or key is missing');
  else {
    try {
      ca = new X509Certificate(caCrt);
      if (!ca.ca) problems.push('ca.crt is not a CA certificate');
      else if (!ca.checkPrivateKey(createPrivateKey(caKey))) problems.push('ca.key does not match ca.crt');
      else if (Date.parse(ca.validTo) - now < 30 * DAY) problems.push('the CA expires within 30 days');
      else caOk = true;
    } catch {
      problems.push('ca.crt or ca.key cannot be read as PEM');
    }
  }
  let serverOk = false;
  let notAfter: Date | undefined;
  if (!crt || !key) problems.push('the server certificate or key is missing');
  else {
    try {
      const cert = new X509Certificate(crt);
      notAfter = new Date(cert.validTo);
      const missing = names.filter((n) => (isIP(n) ? !cert.checkIP(n) : !cert.checkHost(n, { wildcards: false })));
      if (!cert.checkPrivateKey(createPrivateKey(key))) problems.push('server.key does not match server.crt');
      else if (!ca || !cert.verify(ca.publicKey)) problems.push('server.crt is not signed by ca.crt');
      else if (notAfter.getTime() - now < 7 * DAY) problems.push(`server.crt expires ${notAfter.toISOString()}`);
      else if (missing.length) problems.push(`server.crt does not cover ${missing.join(', ')}`);
      else serverOk = caOk;
    } catch {
      problems.push('server.crt or server.key cannot be read as PEM');
    }
  }
  return { caOk, serverOk, problems, notAfter };
}

function opensslConfig(names: readonly string[]): string {
  const alt = names.map((n, i) => (isIP(n) ? `IP.${i} = ${n}` : `DNS.${i} = ${n}`)).join('\n');
  // Our own minimal config, so the system openssl.cnf cannot add or change extensions.
  return `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @alt
[alt]
${alt}
`;
}

export interface IssueResult {
  madeCa: boolean;
  madeServer: boolean;
}

/**
 * Makes what is missing or unusable: a local CA (kept across renewals) and an EC P-256 server
 * certificate; made in a private directory, then placed, so a killed run leaves the old files.
 */
export async function ensureTls(
  ctx: Pick<Ctx, 'fs' | 'clock' | 'exec'>,
  opts: { sslDir: string; names: readonly string[]; days: number; forceCa: boolean; forceServer: boolean },
): Promise<IssueResult> {
  const { fs, exec } = ctx;
  const state = await inspectTls(ctx, opts.sslDir, opts.names);
  const makeCa = opts.forceCa || !state.caOk;
  const makeServer = makeCa || opts.forceServer || !state.serverOk;
  if (!makeServer) return { madeCa: false, madeServer: false };
  await fs.mkdir(opts.sslDir, { recursive: true, mode: 0o700 });
  await fs.chmod(opts.sslDir, 0o700); // ca.key lives here
  const tmp = await fs.mkdtemp(path.join(opts.sslDir, '.new-'));
  try {
    await fs.chmod(tmp, 0o700);
    const cnf = path.join(tmp, 'openssl.cnf');
    await fs.writeFile(cnf, opensslConfig(opts.names), { mode: 0o600 });
    const t = tlsFiles(tmp);
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    // A serial of its own for each certificate: one issuer may not sign two with the same (RFC 5280 4.1.2.2).
    const serial = () => [
      '-set_serial',
      '0x' +
        randomBytes(16)
          .toString('hex')
          .replace(/^[89a-f]/, '7'),
    ];
    const csr = path.join(tmp, 'server.csr');
    // The CA and the server's key and request do not depend on each other: made at once.
    await Promise.all([
      makeCa
        ? exec('openssl', [
            'req',
            '-x509',
            '-new',
            '-config',
            cnf,
            '-extensions',
            'v3_ca',
            ...ec,
            ...serial(),
            '-keyout',
            t.caKey,
            '-out',
            t.caCrt,
            '-days',
            String(CA_DAYS),
            '-subj',
            '/CN=pg-deploy local CA',
          ])
        : Promise.all([fs.copyFile(tlsFiles(opts.sslDir).caCrt, t.caCrt), fs.copyFile(tlsFiles(opts.sslDir).caKey, t.caKey)]),
      exec('openssl', ['req', '-new', '-config', cnf, ...ec, '-keyout', t.serverKey, '-out', csr, '-subj', '/CN=api-db']),
    ]);
    await exec('openssl', [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      t.caCrt,
      '-CAkey',
      t.caKey,
      ...serial(),
      '-days',
      String(opts.days),
      '-extfile',
      cnf,
      '-extensions',
      'v3_server',
      '-out',
      t.serverCrt,
    ]);
    const dest = tlsFiles(opts.sslDir);
    if (makeCa) {
      await place(fs, t.caKey, dest.caKey, 0o600);
      await place(fs, t.caCrt, dest.caCrt, 0o644);
    }
    await place(fs, t.serverKey, dest.serverKey, 0o600);
    await place(fs, t.serverCrt, dest.serverCrt, 0o644);
    return { madeCa: makeCa, madeServer: true };
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

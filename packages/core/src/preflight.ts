import path from 'node:path';
import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { readSecrets, SECRET_NAMES } from './secrets.ts';
import { certificateExpiry, inspectTls, requiredNames, tlsFiles } from './tls.ts';

/** A file or folder whose mode lets others in, and the command that closes it. */
export interface PermissionProblem {
  path: string;
  mode: number;
  /** `database/infra/ssl/ca.key is readable by others (mode 640)`: anyone but the owner, as readSecret says it. */
  message: string;
  fix: string;
}

/**
 * The one check of the modes the README promises, shared by db:up (preflight) and db:doctor: the
 * secrets folder 0700 and every secret file 0600, and both private keys (ca.key, server.key) 0600:
 * no bit for group or others. A missing file is not a mode problem (readSecrets and inspectTls name it).
 */
export async function permissionProblems(ctx: Pick<Ctx, 'cfg' | 'fs'>): Promise<PermissionProblem[]> {
  const { cfg } = ctx;
  const shown = (p: string) => {
    const rel = path.relative(cfg.root, p);
    return rel && !rel.startsWith('..') ? rel : p;
  };
  const tls = tlsFiles(cfg.sslDir);
  const want: [string, number][] = [
    [cfg.secretsDir, 0o700],
    ...SECRET_NAMES.map((n): [string, number] => [path.join(cfg.secretsDir, n), 0o600]),
    [tls.caKey, 0o600],
    [tls.serverKey, 0o600],
  ];
  const out: PermissionProblem[] = [];
  for (const [p, mode] of want) {
    const st = await ctx.fs.stat(p).catch(() => undefined);
    if (!st || !(st.mode & 0o077)) continue;
    const has = st.mode & 0o777;
    out.push({
      path: p,
      mode: has,
      message: `${shown(p)} is ${st.isDirectory() ? 'open to' : 'readable by'} others (mode ${has.toString(8)})`,
      fix: `chmod ${mode.toString(8)} ${shown(p)}`,
    });
  }
  return out;
}

/**
 * What must hold before a server starts: secrets and keys private (permissionProblems), secrets
 * readable and newline-free; certificates present, matching and covering the host names. Warns when
 * the certificate expires within 30 days.
 */
export async function preflight(ctx: Ctx): Promise<void> {
  const loose = await permissionProblems(ctx);
  if (loose.length) throw new UserError(loose.map((l) => l.message).join('; '), loose.map((l) => l.fix).join(' && '));
  await readSecrets(ctx);
  const tls = await inspectTls(ctx, ctx.cfg.sslDir, requiredNames(ctx.cfg.tlsHostnames));
  if (!tls.serverOk) throw new UserError(`TLS is not ready: ${tls.problems.join('; ')}`, 'run: pnpm db:secure');
  const expiry = tls.notAfter && certificateExpiry(tls.notAfter, ctx.clock());
  if (expiry?.fix) ctx.log.warn(`the server certificate expires in ${expiry.days} days; renew it: ${expiry.fix}`);
}

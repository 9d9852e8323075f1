import type { Ctx } from './context.ts';
import { UserError } from './errors.ts';
import { readSecrets } from './secrets.ts';
import { inspectTls, requiredNames } from './tls.ts';

const DAY = 86_400_000;

/**
 * What must hold before a server starts: secrets readable, private and newline-free; certificates
 * present, matching and covering the host names. Warns when the certificate expires within 30 days.
 */
export async function preflight(ctx: Ctx): Promise<void> {
  await readSecrets(ctx);
  const tls = await inspectTls(ctx, ctx.cfg.sslDir, requiredNames(ctx.cfg.tlsHostnames));
  if (!tls.serverOk) throw new UserError(`TLS is not ready: ${tls.problems.join('; ')}`, 'run: pnpm db:secure');
  const key = await ctx.fs.stat(`${ctx.cfg.sslDir}/server.key`);
  if (key.mode & 0o077) throw new UserError(`database/infra/ssl/server.key is readable by others (mode ${(key.mode & 0o777).toString(8)})`, `chmod 600 ${ctx.cfg.sslDir}/server.key`);
  const left = tls.notAfter ? tls.notAfter.getTime() - ctx.clock().getTime() : Infinity;
  if (left < 30 * DAY) ctx.log.warn(`the server certificate expires in ${Math.floor(left / DAY)} days; renew it: pnpm db:secure --force`);
}

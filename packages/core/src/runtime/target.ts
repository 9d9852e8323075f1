import type { Ctx } from '../context.ts';
import type { Target } from '../pg.ts';
import type { Roles } from '../roles.ts';
import { readSecrets } from '../secrets.ts';
import { tlsFiles } from '../tls.ts';
import { LOOPBACK, type LoginName } from './runtime.ts';

/**
 * The secrets, read once per runtime (a rotation builds a new runtime to see new files), and the
 * verified TLS target of each login. Both runtimes take theirs from here.
 */
export function loginTargets(ctx: Pick<Ctx, 'cfg' | 'fs' | 'log'>) {
  let roles: Promise<Roles> | undefined;
  const secrets = (): Promise<Roles> =>
    (roles ??= readSecrets(ctx).catch((e: unknown) => {
      roles = undefined; // a failed read is not kept: the next call reads again
      throw e;
    }));
  const target = async (login: LoginName = 'app'): Promise<Target> => {
    const r = await secrets();
    const ca = await ctx.fs.readFile(tlsFiles(ctx.cfg.sslDir).caCrt, 'utf8');
    return { host: LOOPBACK, port: ctx.cfg.port, ...r[login], database: r.database, ca };
  };
  return { secrets, target };
}

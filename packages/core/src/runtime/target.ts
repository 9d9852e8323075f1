import type { Ctx } from '../context.ts';
import type { Target } from '../pg.ts';
import { driftError, tryLogin, type Admin } from '../provision.ts';
import { settle } from '../provisioned.ts';
import { waitFor } from '../wait.ts';
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

/**
 * The end of a container runtime's up(): the roles provisioned if anything changed (settle), and the
 * host's proof that the server is up, a verified TLS login as the app through the published port
 * (healthy is only the container's view). `healthy` names what is healthy, for the timeout message.
 */
export async function provisionOverTls(
  ctx: Ctx,
  logins: ReturnType<typeof loginTargets>,
  admin: () => Promise<Admin>,
  healthy: string,
): Promise<{ provisioned: boolean }> {
  const s = await logins.secrets();
  const timeoutS = Math.ceil(ctx.cfg.upTimeoutMs / 1000);
  const appLogin = async (app: Target) => {
    let lastError = '';
    await waitFor(
      ctx,
      'waiting for a TLS login',
      ctx.cfg.upTimeoutMs,
      async () => {
        try {
          await tryLogin(app);
          return true;
        } catch (e) {
          const drift = driftError(e, 'app', s.app.user);
          if (drift) throw drift;
          lastError = e instanceof Error ? e.message : String(e);
          return false;
        }
      },
      () => `${healthy} is healthy but no TLS login succeeded within ${timeoutS}s (last error: ${lastError})`,
    );
  };
  return settle(ctx, s, {
    admin,
    app: await logins.target(),
    migrator: await logins.target('migrator'),
    appLogin,
    say: (l) => ctx.log.warn(l),
  });
}

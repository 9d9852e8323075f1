import type { Ctx } from '../context.ts';
import { DB_SERVICE } from './compose.ts';
import type { SwarmStack } from './swarm-deploy.ts';

// A one-off container of api-db's image on one of the stack's volumes, for the file work while
// api-db is scaled to 0 (a recovery, the fence of db:promote): `docker run --rm`, no network, the
// stack's label, a root (or given user's) `sh -c SCRIPT`.

export interface OneOff {
  /** The stack's volume: `pg_data`, `pg_wal_archive`. */
  volume: string;
  /** Where it is mounted. */
  mount: string;
  /** Made (with the stack's label, as stack deploy makes it) when missing; otherwise a missing volume is undefined. */
  create: boolean;
  user?: string;
}

/** The `docker` arguments of `sh -c SCRIPT NAME ARGS...` in a one-off container, or undefined when the volume is missing and not to be made. */
export async function oneOffArgs(
  ctx: Pick<Ctx, 'cfg'>,
  st: SwarmStack,
  o: OneOff,
  script: string,
  name: string,
  args: readonly string[],
): Promise<string[] | undefined> {
  const volume = `${st.stack}_${o.volume}`;
  if ((await st.ask(['volume', 'inspect', '--format', '{{.Name}}', volume])).code !== 0) {
    if (!o.create) return undefined;
    await st.docker(['volume', 'create', '--label', `com.docker.stack.namespace=${st.stack}`, volume], {
      message: `could not create the volume ${volume}`,
    });
  }
  // The image api-db runs (the deployed one, without the digest the engine pinned), else DB_IMAGE.
  const deployed: string | undefined = (await st.deployed())[DB_SERVICE]?.Spec.TaskTemplate.ContainerSpec.Image;
  const image = deployed?.replace(/@sha256:.*$/, '') ?? ctx.cfg.images.db;
  return [
    'run',
    '--rm',
    '-i',
    '--network',
    'none',
    '--label',
    `pg-deploy.stack=${st.stack}`,
    ...(o.user ? ['--user', o.user] : []),
    '--entrypoint',
    'sh',
    '--mount',
    `type=volume,source=${volume},target=${o.mount}`,
    image,
    '-c',
    script,
    name,
    ...args,
  ];
}

import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { dockerRuntime } from './docker.ts';
import { dockerAvailable } from './docker-engine.ts';
import { nativeRuntime } from './native.ts';
import { swarmRuntime } from './swarm.ts';
import type { Runtime } from './runtime.ts';

/** DB_RUNTIME=docker|native, or auto: docker where a recent engine and Compose v2 answer, else native, said aloud (their data differs). */
export async function selectRuntime(ctx: Ctx): Promise<Runtime> {
  const want = ctx.cfg.runtime;
  if (want === 'native') return nativeRuntime(ctx);
  const docker = await dockerAvailable(ctx);
  // DB_TARGET=swarm: the docker runtime's engine, the stack of infra/docker-stack.yml (config.ts refuses native).
  if (ctx.cfg.target === 'swarm') {
    if (!docker.ok) throw new UserError(`DB_TARGET=swarm but ${docker.why}`, docker.hint);
    return swarmRuntime(ctx);
  }
  if (want === 'docker') {
    if (!docker.ok) throw new UserError(`DB_RUNTIME=docker but ${docker.why}`, docker.hint);
    return dockerRuntime(ctx);
  }
  const rt = docker.ok ? dockerRuntime(ctx) : nativeRuntime(ctx);
  ctx.log.info(`runtime: ${rt.label} (${docker.ok ? 'a Docker engine answered' : `${docker.why}; using the embedded PostgreSQL 16`})`);
  return rt;
}

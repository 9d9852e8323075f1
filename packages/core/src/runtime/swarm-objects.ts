import path from 'node:path';
import { createHmac } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { tlsFiles } from '../tls.ts';
import { composeModel, configsOf, configVar, imageVar, secretVar, STACK_VAR } from './swarm-stack.ts';
import { swarm, type Versioned } from './swarm-commands.ts';
import { APP_SERVICE, ensureAppImage } from './swarm-image.ts';

// The Swarm secrets and configs of a stack, versioned: each is immutable, so a new content is a new
// object named after a keyed hash of it; the services move to it, then the old one is removed.

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Compose's model, read field by field
type Json = any;

/**
 * The secrets and configs the stack (or its standby: infra/docker-stack.replica.yml) needs now, each
 * named after a keyed hash of its content, and the variables `docker stack deploy` interpolates
 * (their names, the api's image, the stack's name).
 */
export async function wantedObjects(
  ctx: Ctx,
  stack: string,
  baseEnv: Record<string, string>,
  part: 'stack' | 'standby' = 'stack',
): Promise<{ objects: Versioned[]; env: Record<string, string> }> {
  const { cfg } = ctx;
  const models = await composeModel(ctx, baseEnv);
  const model = part === 'stack' ? models.model : models.standby;
  const app = part === 'stack' ? await ensureAppImage(ctx, model, stack, baseEnv) : undefined;
  // Keyed by the server's private key: a name tells nothing about a password, even a guessable one.
  const key = await ctx.fs.readFile(tlsFiles(cfg.sslDir).serverKey).catch(() => {
    throw new UserError(`no TLS key in ${cfg.sslDir}`, 'create the certificates: pnpm db:secure');
  });
  const infra = path.dirname(cfg.composeFile);
  const list: Omit<Versioned, 'swarmName'>[] = [
    ...Object.entries<Json>(model.secrets ?? {}).map(([name, s]) => ({
      kind: 'secret' as const,
      name,
      file: path.resolve(infra, s.file),
    })),
    ...[...configsOf(model)].map(([name, f]) => ({ kind: 'config' as const, name, file: path.resolve(infra, f) })),
  ];
  const objects: Versioned[] = [];
  const env: Record<string, string> = { ...baseEnv, [STACK_VAR]: stack, [imageVar(APP_SERVICE)]: app ?? `${stack}-${APP_SERVICE}` };
  for (const o of list) {
    const content = await ctx.fs.readFile(o.file).catch(() => {
      throw new UserError(
        `${o.file} is missing`,
        o.kind === 'config'
          ? 'restore it from git'
          : o.name.startsWith('replication_')
            ? 'pnpm db:replica makes it'
            : 'create it: pnpm db:secrets and pnpm db:secure',
      );
    });
    const hash = createHmac('sha256', key).update(`${o.kind}\0${o.name}\0`).update(content).digest('hex').slice(0, 12);
    const swarmName = `${stack}_${o.name}_${hash}`;
    objects.push({ ...o, swarmName });
    env[o.kind === 'secret' ? secretVar(o.name) : configVar(o.name)] = swarmName;
  }
  return { objects, env };
}

/** Creates the versions that do not exist yet; contents go in on stdin, never in argv. */
export async function createObjects(ctx: Ctx, stack: string, objects: Versioned[], env: Record<string, string>): Promise<void> {
  const { cfg, exec } = ctx;
  for (const kind of ['secret', 'config'] as const) {
    const have = new Set(
      (await exec('docker', swarm.objects(kind, stack), { cwd: cfg.root, env, nothrow: true })).stdout.split('\n').filter(Boolean),
    );
    for (const o of objects.filter((x) => x.kind === kind && !have.has(x.swarmName))) {
      const input = await ctx.fs.readFile(o.file, 'utf8');
      await exec('docker', swarm.create(o, stack), {
        cwd: cfg.root,
        env,
        input,
        failure: { message: `could not create the Swarm ${kind} ${o.swarmName}` },
      });
    }
  }
}

/** Removes the versions no longer wanted (all of them for none); one still in use (a task stopping) is left for the next run. */
export async function pruneObjects(ctx: Ctx, stack: string, objects: Versioned[], env: Record<string, string>): Promise<void> {
  const ask = (args: string[]) => ctx.exec('docker', args, { cwd: ctx.cfg.root, env, nothrow: true });
  const keep = new Set(objects.map((o) => o.swarmName));
  for (const kind of ['secret', 'config'] as const) {
    for (const name of (await ask(swarm.objects(kind, stack))).stdout.split('\n').filter(Boolean)) {
      if (!keep.has(name)) await ask(swarm.removeObject(kind, name)); // in use: refused, removed by a later run
    }
  }
}

import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import type { RunResult } from '../exec.ts';
import { waitFor } from '../wait.ts';
import { composeEnv, DB_SERVICE, REPLICA_SERVICE } from './compose.ts';
import { imageVar, LABEL_SPEC, SPEC_VAR, STACK_FILE } from './swarm-stack.ts';
import { swarm } from './swarm-commands.ts';
import { APP_SERVICE, pruneAppImages } from './swarm-image.ts';
import { createObjects, pruneObjects, wantedObjects } from './swarm-objects.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the engine's schema, read field by field
type Json = any;

/** The stack of one runtime: its deploy, the state of its services, api-db's task on this node. */
export interface SwarmStack {
  /** The stack's name (COMPOSE_PROJECT_NAME). */
  stack: string;
  /** The environment every `docker` call of the target gets. */
  env: Record<string, string>;
  /** A service's Swarm name. */
  svc(name: string): string;
  /** `docker ARGS` whose exit code is the answer. */
  ask(args: string[], env?: Record<string, string>): Promise<RunResult>;
  /** `docker ARGS`, failing with this message; `input` on stdin. */
  docker(args: string[], failure: { message: string; hint?: string }, input?: string): Promise<RunResult>;
  /** This engine's node id, once the swarm is known to be active and this node a manager. */
  swarmNode(): Promise<string>;
  /** The deployed services' specs by short name ({} when the stack is not deployed). */
  deployed(): Promise<Record<string, Json>>;
  /** Labels this node as the data node the first time; refuses to run on another. */
  pinData(): Promise<void>;
  /** Makes the stack what the files say, once per runtime; says whether it deployed. */
  converge(): Promise<{ changed: boolean }>;
  /** api-db's running (or, healthy, its healthy) container on this node ('' when none). */
  container(healthy: boolean): Promise<string>;
  /** The stack current and api-db healthy: its container. */
  ready(): Promise<string>;
  /** `docker stack rm`, and its network gone. */
  removeStack(): Promise<void>;
  /** Scales a service (api-db, the standby) to 0 and waits until its container has stopped. */
  scaleDown(service: string): Promise<void>;
  /** Scales api-db back to one task where something (a recovery) left it at 0; says whether it did. */
  startDb(): Promise<boolean>;
}

export function swarmStack(ctx: Ctx): SwarmStack {
  const { cfg, exec } = ctx;
  const stack = cfg.composeProject;
  const stackFile = path.join(cfg.root, STACK_FILE);
  const baseEnv = composeEnv(cfg);
  const svc = (name: string) => `${stack}_${name}`;
  const ask = (args: string[], env: Record<string, string> = baseEnv) => exec('docker', args, { cwd: cfg.root, env, nothrow: true });
  const docker = (args: string[], failure: { message: string; hint?: string }, input?: string) =>
    exec('docker', args, { cwd: cfg.root, env: baseEnv, failure, input });

  let nodeId: Promise<string> | undefined;
  const swarmNode = () =>
    (nodeId ??= (async () => {
      const [state, manager, id] = (await ask(swarm.state())).stdout.trim().split(' ');
      if (state !== 'active')
        throw new UserError(
          `DB_TARGET=swarm but this Docker engine is not in a swarm (its swarm state: ${state || 'unknown'})`,
          'start a single-node swarm with: docker swarm init (or unset DB_TARGET to use Compose)',
        );
      if (manager !== 'true')
        throw new UserError('DB_TARGET=swarm but this node is not a swarm manager', 'run the tasks on a manager node');
      return id;
    })());

  async function deployed(): Promise<Record<string, Json>> {
    const ids = (await ask(swarm.services(stack))).stdout.split('\n').filter(Boolean);
    if (!ids.length) return {};
    const specs: Json[] = JSON.parse((await ask(swarm.inspect(ids))).stdout || '[]');
    return Object.fromEntries(specs.map((s) => [s.Spec.Name.slice(stack.length + 1), s]));
  }

  /** The node that holds the data: the one labelled, or this one the first time. */
  async function pinData(): Promise<void> {
    const node = await swarmNode();
    const labelled = (await ask(swarm.labelledNodes(stack))).stdout.split('\n').filter(Boolean);
    if (!labelled.length) await docker(swarm.labelNode(stack, node), { message: 'could not label this node as the data node' });
    else if (!labelled.includes(node))
      throw new UserError(
        `the data of stack ${stack} is on another node (${labelled[0]}); the tasks reach api-db with docker exec on this one`,
        'run the tasks on that node',
      );
  }

  /**
   * Waits for the updates a deploy started: api-db's (stop-first: the healthy container to talk to is
   * its successor's), the api's (start-first: its successor healthy, then the old task stopped).
   */
  async function waitForUpdates(before: Record<string, Json>): Promise<void> {
    for (const name of Object.keys(before).filter((n) => before[n].Spec.Mode?.Replicated)) {
      // An update this deploy started has a new start time (a label alone starts none).
      const startedBefore = JSON.stringify(before[name].UpdateStatus?.StartedAt ?? null);
      let state = '';
      let started = '';
      await waitFor(
        ctx,
        `updating ${name}`,
        cfg.upTimeoutMs + 60_000,
        async () => {
          [state = '', started = ''] = (await ask(swarm.updateState(svc(name)))).stdout.trim().split('|');
          return !['updating', 'rollback_started'].includes(state);
        },
        () => `the update of ${svc(name)} did not finish; see: docker service ps ${svc(name)}`,
        500,
      );
      if (started !== startedBefore && ['paused', 'rollback_paused', 'rollback_completed'].includes(state))
        throw new UserError(
          `the update of ${svc(name)} stopped (${state.replace('_', ' ')}): its new task did not become healthy`,
          `see: docker service ps --no-trunc ${svc(name)}, and pnpm db:logs`,
        );
    }
  }

  let converged: Promise<{ changed: boolean }> | undefined;
  /**
   * The versions of the secrets and configs, then `docker stack deploy` only when the interpolated
   * stack differs from what runs (its fingerprint is a service label), so a deploy with nothing new
   * changes no service. Waits for the update to converge, then removes the versions nothing uses.
   */
  const converge = () =>
    (converged ??= (async () => {
      await swarmNode();
      const { objects, env } = await wantedObjects(ctx, stack, baseEnv);
      await createObjects(ctx, stack, objects, baseEnv);
      const rendered = await exec('docker', swarm.config(stackFile), {
        cwd: cfg.root,
        env: { ...env, [SPEC_VAR]: '-' },
        failure: { message: `docker stack config could not read ${STACK_FILE}` },
      });
      const spec = createHash('sha256').update(rendered.stdout).digest('hex').slice(0, 16);
      const now = await deployed();
      // The standby is deployed from its own file (swarm-replica.ts): its fingerprint is that file's.
      const names = Object.keys(now).filter((n) => n !== REPLICA_SERVICE);
      const same = names.length > 0 && names.every((n) => now[n].Spec.Labels?.[LABEL_SPEC] === spec) && now[DB_SERVICE];
      if (!same) {
        await exec('docker', swarm.deploy(stackFile, stack), {
          cwd: cfg.root,
          env: { ...env, [SPEC_VAR]: spec },
          timeoutMs: cfg.upTimeoutMs + 60_000,
          failure: { message: `docker stack deploy of ${stack} failed`, hint: `see: pnpm db:logs, and docker stack ps ${stack}` },
        });
        await waitForUpdates(now);
      }
      await pruneObjects(ctx, stack, objects, baseEnv);
      await pruneAppImages(ctx, stack, env[imageVar(APP_SERVICE)], baseEnv);
      return { changed: !same };
    })().catch((e: unknown) => {
      converged = undefined;
      throw e;
    }));

  const container = async (healthy: boolean) => (await ask(swarm.container(stack, DB_SERVICE, healthy))).stdout.trim().split('\n')[0] ?? '';

  async function ready(): Promise<string> {
    if (Object.keys(await deployed()).length) await converge();
    let id = '';
    await waitFor(
      ctx,
      `waiting for ${DB_SERVICE} to be healthy`,
      cfg.upTimeoutMs,
      async () => (id = await container(true)) !== '',
      () => `${DB_SERVICE} of stack ${stack} is not healthy after ${Math.ceil(cfg.upTimeoutMs / 1000)}s; see: pnpm db:logs`,
      500,
    );
    return id;
  }

  /**
   * `stack rm`, until its services and network are gone: the engine removes them after the command
   * returns, and a deploy meanwhile fails ("network <stack>_default not found").
   */
  async function removeStack(): Promise<void> {
    await ask(swarm.remove(stack)); // not deployed: nothing to remove, not an error
    let left = '';
    await waitFor(
      ctx,
      `removing stack ${stack}`,
      60_000,
      async () => {
        const services = (await ask(swarm.services(stack))).stdout.trim();
        const networks = (await ask(swarm.networks(stack))).stdout.trim();
        left = services ? 'services' : networks ? 'network' : '';
        return !left;
      },
      () =>
        `the ${left} of stack ${stack} ${left === 'services' ? 'are' : 'is'} still there; see: docker ${left === 'services' ? 'service' : 'network'} ls --filter label=com.docker.stack.namespace=${stack}`,
      250,
    );
  }

  async function scaleDown(service: string): Promise<void> {
    await docker(swarm.scale(svc(service), 0), { message: `could not stop ${svc(service)}`, hint: 'see: pnpm db:logs' });
    await waitFor(
      ctx,
      `stopping ${service}`,
      120_000, // its stop_grace_period is 30s
      async () => (await ask(swarm.container(stack, service, false))).stdout.trim() === '',
      () => `${svc(service)} still runs; see: docker service ps ${svc(service)}`,
      250,
    );
  }

  async function startDb(): Promise<boolean> {
    const db = (await deployed())[DB_SERVICE];
    if (!db || db.Spec.Mode?.Replicated?.Replicas !== 0) return false;
    await docker(swarm.scale(svc(DB_SERVICE), 1), { message: `could not start ${svc(DB_SERVICE)}`, hint: 'see: pnpm db:logs' });
    return true;
  }

  return {
    stack,
    env: baseEnv,
    svc,
    ask,
    docker,
    swarmNode,
    deployed,
    pinData,
    converge,
    container,
    ready,
    removeStack,
    scaleDown,
    startDb,
  };
}

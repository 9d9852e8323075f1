import { docker } from './docker.ts';

/**
 * The swarm the Swarm tests start on the CI engine and leave at the end. They never touch a swarm
 * they did not start: an engine already in one fails the suite before anything is changed.
 */

/** This engine's swarm state: inactive, active, pending, ... */
export async function swarmState(): Promise<string> {
  return (await docker(['info', '--format', '{{.Swarm.LocalNodeState}}'])).stdout.trim();
}

/** `docker swarm init` on loopback; refuses (throws) when the engine is already in a swarm. */
export async function startSwarm(): Promise<void> {
  const state = await swarmState();
  if (state !== 'inactive')
    throw new Error(
      `this Docker engine is already in a swarm (state: ${state}); the Swarm tests start and leave their own, so they refuse to touch it`,
    );
  await docker(['swarm', 'init', '--advertise-addr', '127.0.0.1']);
}

/** `docker swarm leave --force`: removes every service, secret and config of the swarm this test started. */
export async function leaveSwarm(): Promise<void> {
  await docker(['swarm', 'leave', '--force'], { nothrow: true });
}

/** The Version.Index of each service of the stack, by name. */
export async function serviceVersions(stack: string): Promise<Record<string, number>> {
  const ids = (await docker(['service', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`])).stdout
    .split('\n')
    .filter(Boolean);
  const specs = JSON.parse((await docker(['service', 'inspect', ...ids])).stdout) as {
    Spec: { Name: string };
    Version: { Index: number };
  }[];
  return Object.fromEntries(specs.map((s) => [s.Spec.Name, s.Version.Index]));
}

/** The running container of a stack's service on this node ('' when none). */
export async function taskContainer(stack: string, service: string): Promise<string> {
  return (
    await docker(['ps', '--quiet', '--filter', `label=com.docker.swarm.service.name=${stack}_${service}`, '--filter', 'status=running'])
  ).stdout
    .trim()
    .split('\n')[0];
}

/** What `docker service inspect` says of the stack's services and `docker inspect` of its containers (stopped ones too), as one text. */
export async function stackInspect(stack: string): Promise<string> {
  const list = async (args: string[]) => (await docker(args)).stdout.split('\n').filter(Boolean);
  const ids = await list(['service', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`]);
  const containers = await list(['ps', '--all', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`]);
  return [(await docker(['service', 'inspect', ...ids])).stdout, (await docker(['inspect', ...containers])).stdout].join('\n');
}

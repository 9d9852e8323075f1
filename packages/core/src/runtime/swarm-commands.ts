import { DATA_VOLUME } from './compose.ts';
import { dataLabel, LABEL_NAME, LABEL_STACK } from './swarm-stack.ts';

/** A Swarm secret or config the stack names: its logical name, its versioned Swarm name, the host file. */
export interface Versioned {
  kind: 'secret' | 'config';
  name: string;
  swarmName: string;
  file: string;
}

/** `docker` argument arrays of the swarm target, as data. */
export const swarm = {
  state: () => ['info', '--format', '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}}'],
  // Detached: the tool waits for api-db itself. `--detach=false` fails the deploy while any service
  // is unstable, and the example api is until the roles it logs in as are provisioned (after this).
  deploy: (file: string, stack: string) => ['stack', 'deploy', '--resolve-image', 'never', '--detach=true', '--quiet', '-c', file, stack],
  updateState: (service: string) => [
    'service',
    'inspect',
    '--format',
    '{{if .UpdateStatus}}{{.UpdateStatus.State}}|{{json .UpdateStatus.StartedAt}}{{end}}',
    service,
  ],
  config: (file: string) => ['stack', 'config', '-c', file],
  remove: (stack: string) => ['stack', 'rm', '--detach=false', stack],
  services: (stack: string) => ['service', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`],
  inspect: (ids: readonly string[]) => ['service', 'inspect', ...ids],
  objects: (kind: 'secret' | 'config', stack: string) => [
    'secret' === kind ? 'secret' : 'config',
    'ls',
    '--filter',
    `label=${LABEL_STACK}=${stack}`,
    '--format',
    '{{.Name}}',
  ],
  // The content on stdin (`-`): never in argv.
  create: (o: Versioned, stack: string) => [
    o.kind,
    'create',
    '--label',
    `${LABEL_STACK}=${stack}`,
    '--label',
    `${LABEL_NAME}=${o.name}`,
    o.swarmName,
    '-',
  ],
  removeObject: (kind: 'secret' | 'config', name: string) => [kind, 'rm', name],
  labelledNodes: (stack: string) => ['node', 'ls', '--quiet', '--filter', `node.label=${dataLabel(stack)}=true`],
  labelNode: (stack: string, node: string) => ['node', 'update', '--label-add', `${dataLabel(stack)}=true`, node],
  unlabelNode: (stack: string, node: string) => ['node', 'update', '--label-rm', dataLabel(stack), node],
  // The running task's container on this node (the data node, where the tool runs).
  container: (stack: string, service: string, healthy: boolean) => [
    'ps',
    '--quiet',
    '--filter',
    `label=com.docker.swarm.service.name=${stack}_${service}`,
    '--filter',
    healthy ? 'health=healthy' : 'status=running',
  ],
  taskStates: (service: string) => ['service', 'ps', '--quiet', '--no-trunc', service],
  task: (id: string) => ['inspect', '--format', '{{.Status.State}} {{.Status.ContainerStatus.ExitCode}}', id],
  logs: (service: string, follow: boolean) => ['service', 'logs', ...(follow ? ['--follow'] : []), '--tail', '100', service],
  jobLogs: (service: string) => ['service', 'logs', '--raw', service],
  removeService: (service: string) => ['service', 'rm', service],
  networks: (stack: string) => ['network', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`],
  // One volume of the stack (default: the data's), by its label and name.
  volume: (stack: string, name: string = DATA_VOLUME) => [
    'volume',
    'ls',
    '--quiet',
    '--filter',
    `label=com.docker.stack.namespace=${stack}`,
    '--filter',
    `name=${stack}_${name}`,
  ],
  // Every volume of the stack (the data's, the WAL archive's), for db:delete.
  volumes: (stack: string) => ['volume', 'ls', '--quiet', '--filter', `label=com.docker.stack.namespace=${stack}`],
  images: (repository: string) => ['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', '--filter', `reference=${repository}`],
  imageInputs: (label: string, tag: string) => ['image', 'inspect', '--format', `{{index .Config.Labels "${label}"}}`, tag],
  // Detached: the caller waits for the containers themselves (a task stopping has no other end to wait for).
  scale: (service: string, replicas: number) => ['service', 'scale', '--detach', `${service}=${replicas}`],
  // Every container of a service on this node, stopped ones too (a failed task's), with its state.
  allContainers: (stack: string, service: string) => [
    'ps',
    '--all',
    '--no-trunc',
    '--filter',
    `label=com.docker.swarm.service.name=${stack}_${service}`,
    '--format',
    '{{.ID}} {{.State}}',
  ],
  logsSince: (service: string, since: string) => ['service', 'logs', '--raw', '--since', since, service],
};

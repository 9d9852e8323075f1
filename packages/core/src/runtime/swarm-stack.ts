import path from 'node:path';
import type { Ctx } from '../context.ts';

/**
 * infra/docker-stack.yml is derived from infra/docker-compose.yml, never written by hand: Compose
 * normalises the file (`docker compose config --format json`: long-form volumes, ports, secrets),
 * and toStack() turns that model into what `docker stack deploy` accepts. `pnpm stack:generate`
 * writes it; test/swarm-stack.test.ts regenerates it and fails when the two differ.
 *
 * Variables stay variables: Compose is run with a sentinel for each `${VAR:-default}` of the file
 * (a path-like one, or a number for ports), and every sentinel is put back as `${VAR:-default}`,
 * which `docker stack deploy` interpolates in turn. (`config --no-interpolate` cannot be used: it
 * fails on `${DB_MIGRATIONS_DIR:-...}:/migrations:ro`, "too many colons".)
 */

export const STACK_FILE = 'infra/docker-stack.yml';

/** The node label that pins the data (and the services that bind host paths) to one node. */
export const dataLabel = (stack: string) => `pg-deploy.${stack}.data`;
/** What a Swarm object made by the tool carries, so that old versions are found and removed. */
export const LABEL_STACK = 'pg-deploy.stack';
export const LABEL_NAME = 'pg-deploy.name';
/** On every service: the fingerprint of what was deployed, so that a deploy with nothing new changes nothing. */
export const LABEL_SPEC = 'pg-deploy.spec';

/** The variables the tool sets for `docker stack deploy`; each one fails the deploy, with this message, when unset. */
const BY_TOOL = 'set by pnpm db:up with DB_TARGET=swarm';
const envName = (kind: string, name: string) => `PGDEPLOY_${kind}_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
export const secretVar = (name: string) => envName('SECRET', name);
export const configVar = (name: string) => envName('CONFIG', name);
export const imageVar = (service: string) => envName('IMAGE', service);
export const replicasVar = (service: string) => `ENV_${service.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_REPLICAS`;
export const STACK_VAR = 'PGDEPLOY_STACK';
export const SPEC_VAR = 'PGDEPLOY_SPEC';
const required = (v: string) => `\${${v}:?${BY_TOOL}}`;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Compose's model, read field by field
type Json = any;

export interface Variable {
  name: string;
  /** The text after `:-`, or undefined for a bare `${VAR}`. */
  fallback?: string;
}

/** The `${VAR}` and `${VAR:-default}` of a compose file, each once. */
export function variablesOf(text: string): Variable[] {
  const out = new Map<string, Variable>();
  for (const m of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g)) {
    if (!out.has(m[1])) out.set(m[1], { name: m[1], fallback: m[2] });
  }
  return [...out.values()];
}

/** A value Compose accepts where the variable stands: a number for a port, an absolute-looking path otherwise. */
function sentinels(vars: Variable[]): Map<string, { value: string; text: string }> {
  const s = new Map<string, { value: string; text: string }>();
  vars.forEach((v, i) => {
    const text = v.fallback === undefined ? `\${${v.name}}` : `\${${v.name}:-${v.fallback}}`;
    s.set(v.name, { value: /PORT$/.test(v.name) ? String(64000 + i) : `/@@${v.name}@@`, text });
  });
  return s;
}

/** Puts `${VAR:-default}` back wherever Compose left a sentinel. */
function restore(value: Json, s: Map<string, { value: string; text: string }>): Json {
  if (typeof value === 'string') {
    for (const { value: sv, text } of s.values()) {
      if (/^\d+$/.test(sv)) {
        if (value === sv) return text;
      } else value = value.split(sv).join(text);
    }
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => restore(v, s));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, restore(v, s)]));
  return value;
}

/** A bind-mounted file of the repository (not a variable's path): it becomes a Swarm config. */
const isRepoFile = (m: Json) => m.type === 'bind' && typeof m.source === 'string' && !m.source.includes('@@') && /\.\w+$/.test(m.source);
/** `../database/infra/config/pg_hba.conf` is the config `pg_hba_conf`. */
export const configName = (source: string) => path.basename(source).replace(/[^A-Za-z0-9]/g, '_');

/**
 * The secrets a service holds under Compose but not in the stack, where a new version of a secret is
 * a new task: api-db holds app_password only for db-psql, to which the swarm runtime hands the
 * password with `docker exec -e PGPASSWORD` instead. So rotating the app's password updates the app,
 * never the database.
 */
export const EXEC_ONLY_SECRETS: Readonly<Record<string, readonly string[]>> = { 'api-db': ['app_password'] };

/** The process that holds the published port of a service updated start-first (publish.mjs says why), in the Node image. */
export const PUBLISH_SCRIPT = './swarm/publish.mjs';
const PUBLISH_IMAGE = '${NODE_IMAGE:-node:20-alpine}'; // as infra/docker-compose.yml builds the api on
export const publisherName = (service: string) => `${service}-publish`;

/** A long-running service without a volume or a host directory: updated start-first, its successor healthy before it stops. */
const isStateless = (svc: Json, named: Set<string>) =>
  svc.restart !== 'no' &&
  !(svc.volumes ?? []).some((m: Json) => (m.type === 'volume' && named.has(m.source)) || (m.type === 'bind' && !isRepoFile(m)));
/** The services whose published ports a publisher holds. */
const published = (model: Json) => {
  const named = new Set(Object.keys(model.volumes ?? {}));
  return Object.entries<Json>(model.services ?? {}).filter(([, svc]) => svc.ports?.length && isStateless(svc, named));
};

/** The Swarm configs of a Compose model: name -> the file (relative to infra/, as Compose wrote it). */
export function configsOf(model: Json): Map<string, string> {
  const out = new Map<string, string>();
  for (const svc of Object.values<Json>(model.services ?? {}))
    for (const m of svc.volumes ?? []) if (isRepoFile(m)) out.set(configName(m.source), m.source);
  if (published(model).length) out.set(configName(PUBLISH_SCRIPT), PUBLISH_SCRIPT);
  return out;
}

export const STANDBY_STACK_FILE = 'infra/docker-stack.replica.yml';

/** The model with only the services picked, and the secrets and volumes they use. */
function onlyServices(model: Json, pick: (svc: Json) => boolean): Json {
  const services = Object.fromEntries(Object.entries<Json>(model.services ?? {}).filter(([, svc]) => pick(svc)));
  const used = (pick: (svc: Json) => string[]) => new Set(Object.values<Json>(services).flatMap(pick));
  const secrets = used((svc) => (svc.secrets ?? []).map((x: Json) => x.source));
  const volumes = used((svc) => (svc.volumes ?? []).filter((m: Json) => m.type === 'volume').map((m: Json) => m.source));
  const keep = (o: Json | undefined, names: Set<string>) => Object.fromEntries(Object.entries<Json>(o ?? {}).filter(([k]) => names.has(k)));
  return { ...model, services, secrets: keep(model.secrets, secrets), volumes: keep(model.volumes, volumes) };
}

const isStandby = (svc: Json) => (svc.profiles ?? []).includes('replica');
/**
 * The model without the Compose standby (the `replica` profile) and the secrets and volumes only it
 * uses: infra/docker-stack.yml. A stack that named the replication secrets would need their files
 * at every deploy, though no standby runs.
 */
export const withoutStandby = (model: Json): Json => onlyServices(model, (svc) => !isStandby(svc));
/**
 * The standby alone, with the secrets and volumes it uses: infra/docker-stack.replica.yml, which
 * pnpm db:replica deploys into the same stack (no --prune: the other services stay as they are).
 */
export const standbyOnly = (model: Json): Json => onlyServices(model, isStandby);

/** The stack for `docker stack deploy`, from Compose's model of infra/docker-compose.yml (sentinels already restored). */
export function toStack(model: Json): Json {
  const services: Json = {};
  const named = new Set(Object.keys(model.volumes ?? {}));
  for (const [name, svc] of Object.entries<Json>(model.services ?? {})) {
    const out: Json = {};
    // A service without an image of its own (built by Compose) runs the image the tool builds and tags.
    out.image = svc.image ?? required(imageVar(name));
    if (svc.entrypoint) out.entrypoint = svc.entrypoint;
    if (svc.command) out.command = svc.command;
    if (svc.environment) out.environment = svc.environment;
    const volumes: Json[] = [];
    const configs: Json[] = [];
    let nodeLocal = false;
    for (const m of svc.volumes ?? []) {
      if (m.type === 'volume' && named.has(m.source)) {
        nodeLocal = true;
        volumes.push({ type: 'volume', source: m.source, target: m.target });
      } else if (isRepoFile(m)) {
        // Scripts executable, everything read-only, root's (the images' entrypoints run as root).
        configs.push({ source: configName(m.source), target: m.target, uid: '0', gid: '0', mode: /\.sh$/.test(m.source) ? 0o555 : 0o444 });
      } else if (m.type === 'bind') {
        // A host directory (the migrations): it exists only on this node.
        nodeLocal = true;
        volumes.push({ type: 'bind', source: m.source, target: m.target, read_only: Boolean(m.read_only) });
      } else volumes.push(m);
    }
    // Swarm has no shm_size: a tmpfs of that size on /dev/shm instead.
    if (svc.shm_size) volumes.push({ type: 'tmpfs', target: '/dev/shm', tmpfs: { size: Number(svc.shm_size) } });
    for (const t of svc.tmpfs ?? []) volumes.push({ type: 'tmpfs', target: t });
    if (volumes.length) out.volumes = volumes;
    if (configs.length) out.configs = configs;
    if (svc.secrets) {
      // In memory (tmpfs), root's only: every reader runs as root (the images' entrypoints, docker exec).
      out.secrets = svc.secrets
        .filter((s: Json) => !EXEC_ONLY_SECRETS[name]?.includes(s.source))
        .map((s: Json) => ({
          source: s.source,
          target: path.basename(s.target ?? s.source),
          uid: '0',
          gid: '0',
          mode: 0o400,
        }));
    }
    const publisher = svc.ports?.length && isStateless(svc, named);
    if (svc.ports && !publisher) {
      // Swarm cannot bind one address: `host_ip` is refused by the stack schema of Docker 26.1, and
      // both modes listen on every interface. `host` mode (not the ingress mesh) publishes the port on
      // the one node that runs the task, never on every node of the swarm; pg_hba.conf admits TLS only.
      // Firewall the port, or set the engine's default bind address ("ip": "127.0.0.1" in daemon.json).
      out.ports = svc.ports.map((p: Json) => ({ target: p.target, published: p.published, protocol: p.protocol ?? 'tcp', mode: 'host' }));
    }
    if (svc.healthcheck) out.healthcheck = svc.healthcheck;
    if (svc.stop_grace_period) out.stop_grace_period = svc.stop_grace_period;
    // DNS round-robin, not a virtual IP: the name resolves to the task itself. IPVS's virtual IPs
    // drop idle connections after 15 minutes (a pooled PostgreSQL session) and need kernel modules
    // some hosts lack (here: "no route to host"); host-mode ports need no virtual IP.
    const deploy: Json = { endpoint_mode: 'dnsrr' };
    if (svc.restart === 'no') {
      // A one-shot job. Replicas 0: deployed as a template, run by the tool with the words it is
      // given (pnpm db:migrate), which waits for its exit status.
      deploy.mode = 'replicated-job';
      deploy.replicas = 0;
      deploy.restart_policy = { condition: 'none' };
    } else {
      // A Compose profile (optional, off by default) is a service scaled to 0 unless ENV_<NAME>_REPLICAS says otherwise.
      if (svc.profiles?.length) deploy.replicas = `\${${replicasVar(name)}:-0}`;
      deploy.restart_policy = { condition: 'any' };
      // The data volume's server is stopped before its successor starts; a stateless service keeps running until its successor does.
      deploy.update_config = { order: nodeLocal ? 'stop-first' : 'start-first' };
    }
    // The volume (and a host directory) lives on one node: the service runs there and only there.
    if (nodeLocal) deploy.placement = { constraints: [`node.labels.${dataLabel(`\${${STACK_VAR}:?${BY_TOOL}}`)} == true`] };
    deploy.labels = { [LABEL_SPEC]: required(SPEC_VAR) };
    out.deploy = deploy;
    services[name] = out;
    if (publisher) {
      // Its ports are held by a publisher in front of it: a host-mode port of its own would stop its
      // start-first update (the successor waits for the port its predecessor holds, for ever), and the
      // ingress mesh that would share the port needs IPVS, which some hosts (this one) lack.
      const ports = svc.ports.map((p: Json) => ({ target: p.target, published: p.published, protocol: p.protocol ?? 'tcp', mode: 'host' }));
      services[publisherName(name)] = {
        image: PUBLISH_IMAGE,
        command: ['node', '/usr/local/lib/publish.mjs', name, ...svc.ports.map((p: Json) => String(p.target))],
        configs: [{ source: configName(PUBLISH_SCRIPT), target: '/usr/local/lib/publish.mjs', uid: '0', gid: '0', mode: 0o444 }],
        ports,
        deploy: {
          endpoint_mode: 'dnsrr',
          // As many as the service (0 while its profile is off), one per node: each holds the node's port.
          ...(deploy.replicas !== undefined && { replicas: deploy.replicas }),
          placement: { max_replicas_per_node: 1 },
          restart_policy: { condition: 'any' },
          // Its port cannot be held by two tasks: the old one stops first (it changes only with publish.mjs).
          update_config: { order: 'stop-first' },
          labels: deploy.labels,
        },
      };
    }
  }
  const external = (names: string[], v: (n: string) => string) =>
    Object.fromEntries(names.sort().map((n) => [n, { external: true, name: required(v(n)) }]));
  return {
    services,
    volumes: Object.fromEntries([...named].map((v) => [v, {}])),
    secrets: external(Object.keys(model.secrets ?? {}), secretVar),
    configs: external([...configsOf(model).keys()], configVar),
  };
}

/**
 * Compose's model of the compose file. Without `env`, with sentinels in place of the variables
 * (for the generator); with `env`, interpolated as the tasks run it (for the runtime: the secrets'
 * absolute paths).
 */
export async function composeModel(
  ctx: Pick<Ctx, 'exec' | 'fs' | 'cfg'>,
  env?: Record<string, string>,
): Promise<{ model: Json; standby: Json; text: string }> {
  const file = ctx.cfg.composeFile;
  const text = await ctx.fs.readFile(file, 'utf8');
  const s = sentinels(variablesOf(text));
  const vars = env ?? Object.fromEntries([...s].map(([k, v]) => [k, v.value]));
  const r = await ctx.exec('docker', ['compose', '-f', file, '--profile', '*', 'config', '--no-path-resolution', '--format', 'json'], {
    cwd: ctx.cfg.root,
    env: { ...Object.fromEntries([...s.keys()].map((k) => [k, undefined])), ...vars },
    failure: {
      message: `docker compose could not read ${path.relative(ctx.cfg.root, file)}`,
      hint: 'check it with: docker compose -f infra/docker-compose.yml config',
    },
  });
  const full = env ? JSON.parse(r.stdout) : restore(JSON.parse(r.stdout), s);
  return { model: withoutStandby(full), standby: standbyOnly(full), text };
}

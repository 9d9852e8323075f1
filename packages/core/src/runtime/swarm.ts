import path from 'node:path';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UsageError, UserError } from '../errors.ts';
import { waitFor } from '../wait.ts';
import type { Runtime } from './runtime.ts';
import { driftError, tryLogin, type Admin } from '../provision.ts';
import { settle } from '../provisioned.ts';
import type { Target } from '../pg.ts';
import type { PgTool, PgToolIo } from './tools.ts';
import { containerDirArgs, containerToolArgs, hostRedirect, packDir, unpackDir } from './container-tools.ts';
import type { RunResult } from '../exec.ts';
import { loadMigrations } from '../migrations/files.ts';
import { migrateArgs } from '../migrations/command.ts';
import { composeEnv, DATA_VOLUME, DB_SERVICE, MIGRATE_SERVICE } from './compose.ts';
import { loginTargets } from './target.ts';
import { tlsFiles } from '../tls.ts';
import { INPUTS_LABEL } from '../images.ts';
import {
  composeModel,
  configsOf,
  configVar,
  dataLabel,
  imageVar,
  LABEL_NAME,
  LABEL_SPEC,
  LABEL_STACK,
  secretVar,
  SPEC_VAR,
  STACK_FILE,
  STACK_VAR,
} from './swarm-stack.ts';

const APP_SERVICE = 'api';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the engine's schema, read field by field
type Json = any;

/** A Swarm secret or config the stack names: its logical name, its versioned Swarm name, the host file. */
interface Versioned {
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
  volume: (stack: string) => [
    'volume',
    'ls',
    '--quiet',
    '--filter',
    `label=com.docker.stack.namespace=${stack}`,
    '--filter',
    `name=${stack}_${DATA_VOLUME}`,
  ],
  images: (repository: string) => ['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', '--filter', `reference=${repository}`],
};

/**
 * The image `docker stack deploy` runs for a service Compose builds (the example api): tagged with
 * the hash of what it is built from (every file of the build context, the build arguments, the base
 * image's id), so that a change to packages/api is a new tag, which updates the service, and the
 * same files are the same tag, which changes nothing. `inputs` goes on the image as a label, as the
 * stand-ins carry theirs (images.ts).
 */
export async function builtImage(
  ctx: Pick<Ctx, 'exec' | 'fs' | 'cfg'>,
  model: Json,
  stack: string,
  service: string,
): Promise<{ tag: string; inputs: string; context: string; build: Json } | undefined> {
  const build = model.services?.[service]?.build;
  if (!build) return undefined;
  const context = path.resolve(path.dirname(ctx.cfg.composeFile), build.context ?? '.');
  const h = createHash('sha256');
  const files = (await ctx.fs.readdir(context, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => path.relative(context, path.join(e.parentPath ?? e.path, e.name)))
    .sort();
  for (const f of files)
    h.update(f)
      .update('\0')
      .update(await ctx.fs.readFile(path.join(context, f)))
      .update('\0');
  const args: Record<string, string> = build.args ?? {};
  h.update(JSON.stringify([build.dockerfile ?? 'Dockerfile', Object.entries(args).sort()]));
  // The base image's id: a rebuilt NODE_IMAGE under the same name is a new input too.
  for (const image of Object.values(args).filter((v) => typeof v === 'string' && v)) {
    const r = await ctx.exec('docker', ['image', 'inspect', '--format', '{{.Id}}', image], { nothrow: true });
    h.update(r.code === 0 ? r.stdout.trim() : '').update('\0');
  }
  const inputs = h.digest('hex');
  return { tag: `${stack}-${service}:${inputs.slice(0, 12)}`, inputs, context, build };
}

/** `docker service create` arguments for a one-shot run of the stack's job template (its deployed spec), with these arguments. */
export function jobArgs(spec: Json, name: string, stack: string, args: readonly string[]): string[] {
  const t = spec.TaskTemplate;
  const c = t.ContainerSpec;
  const out = ['service', 'create', '--detach', '--quiet', '--name', name, '--mode', 'replicated-job', '--restart-condition', 'none'];
  out.push('--label', `com.docker.stack.namespace=${stack}`, '--label', `${LABEL_STACK}=${stack}`);
  for (const n of t.Networks ?? []) out.push('--network', n.Target);
  for (const k of t.Placement?.Constraints ?? []) out.push('--constraint', k);
  for (const s of c.Secrets ?? [])
    out.push('--secret', `source=${s.SecretName},target=${s.File.Name},uid=${s.File.UID},gid=${s.File.GID},mode=${s.File.Mode}`);
  for (const s of c.Configs ?? [])
    out.push('--config', `source=${s.ConfigName},target=${s.File.Name},uid=${s.File.UID},gid=${s.File.GID},mode=${s.File.Mode}`);
  for (const m of c.Mounts ?? [])
    out.push('--mount', `type=${m.Type},source=${m.Source},target=${m.Target}${m.ReadOnly ? ',readonly' : ''}`);
  for (const e of c.Env ?? []) out.push('--env', e);
  if (c.Command?.length) out.push('--entrypoint', c.Command.join(' '));
  out.push(c.Image.replace(/@sha256:.*$/, ''), ...args);
  return out;
}

/**
 * DB_TARGET=swarm: the stack of infra/docker-stack.yml on this engine's swarm, named
 * COMPOSE_PROJECT_NAME. SQL and client tools go through `docker exec` into api-db's task container
 * on this node (the data node), on stdin as in the compose runtime.
 */
export function swarmRuntime(ctx: Ctx): Runtime {
  const { cfg, exec, log } = ctx;
  const stack = cfg.composeProject;
  const stackFile = path.join(cfg.root, STACK_FILE);
  const baseEnv = composeEnv(cfg);
  const svc = (name: string) => `${stack}_${name}`;
  const ask = (args: string[], env: Record<string, string> = baseEnv) => exec('docker', args, { cwd: cfg.root, env, nothrow: true });
  const docker = (args: string[], failure: { message: string; hint?: string }, env: Record<string, string> = baseEnv, input?: string) =>
    exec('docker', args, { cwd: cfg.root, env, failure, input });
  const { secrets, target } = loginTargets(ctx);

  let nodeId: Promise<string> | undefined;
  /** This engine's node id, once the swarm is known to be active and this node a manager. */
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

  /** The secrets and configs the stack needs now, each named after a keyed hash of its content. */
  async function wanted(): Promise<{ objects: Versioned[]; env: Record<string, string> }> {
    const { model } = await composeModel(ctx, baseEnv);
    const app = await ensureAppImage(model);
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
          o.kind === 'secret' ? 'create it: pnpm db:secrets and pnpm db:secure' : 'restore it from git',
        );
      });
      const hash = createHmac('sha256', key).update(`${o.kind}\0${o.name}\0`).update(content).digest('hex').slice(0, 12);
      const swarmName = `${stack}_${o.name}_${hash}`;
      objects.push({ ...o, swarmName });
      env[o.kind === 'secret' ? secretVar(o.name) : configVar(o.name)] = swarmName;
    }
    return { objects, env };
  }

  /**
   * Stack deploy ignores `build`: the example service's image is built here, as Compose would build
   * it, when no image records its current inputs (builtImage). Returns its tag.
   */
  async function ensureAppImage(model: Json): Promise<string | undefined> {
    const want = await builtImage(ctx, model, stack, APP_SERVICE);
    if (!want) return undefined;
    const have = await ask(['image', 'inspect', '--format', `{{index .Config.Labels "${INPUTS_LABEL}"}}`, want.tag]);
    if (have.code === 0 && have.stdout.trim() === want.inputs) return want.tag;
    log.step(`building the ${APP_SERVICE} image ${want.tag}`);
    const args = Object.entries<string>(want.build.args ?? {}).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]);
    await docker(
      [
        'build',
        '--quiet',
        '--label',
        `${INPUTS_LABEL}=${want.inputs}`,
        ...args,
        '--file',
        path.resolve(want.context, want.build.dockerfile ?? 'Dockerfile'),
        '--tag',
        want.tag,
        want.context,
      ],
      { message: `could not build the ${APP_SERVICE} image from ${path.relative(cfg.root, want.context) || want.context}` },
      { ...baseEnv, DOCKER_BUILDKIT: '0' }, // the classic builder, as images.ts: no buildx plugin is needed
    );
    return want.tag;
  }

  /** Creates the versions that do not exist yet; contents go in on stdin. */
  async function createObjects(objects: Versioned[]): Promise<void> {
    for (const kind of ['secret', 'config'] as const) {
      const have = new Set((await ask(swarm.objects(kind, stack))).stdout.split('\n').filter(Boolean));
      for (const o of objects.filter((x) => x.kind === kind && !have.has(x.swarmName))) {
        const content = await ctx.fs.readFile(o.file, 'utf8');
        await docker(swarm.create(o, stack), { message: `could not create the Swarm ${kind} ${o.swarmName}` }, baseEnv, content);
      }
    }
  }

  /** Removes the versions no longer wanted; one still in use (a task stopping) is left for the next run. */
  async function pruneObjects(objects: Versioned[]): Promise<void> {
    const keep = new Set(objects.map((o) => o.swarmName));
    for (const kind of ['secret', 'config'] as const) {
      for (const name of (await ask(swarm.objects(kind, stack))).stdout.split('\n').filter(Boolean)) {
        if (!keep.has(name)) await ask(swarm.removeObject(kind, name)); // in use: refused, removed by a later run
      }
    }
  }

  /** The deployed services' specs by short name ({} when the stack is not deployed). */
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

  let converged: Promise<{ changed: boolean }> | undefined;
  /**
   * Makes the stack what the files say, once per runtime: the versions of the secrets and configs,
   * then `docker stack deploy` only when the interpolated stack differs from what runs (its
   * fingerprint is a service label), so a deploy with nothing new changes no service. Waits for the
   * update to converge, then removes the versions nothing uses any more.
   */
  const converge = () =>
    (converged ??= (async () => {
      await swarmNode();
      const { objects, env } = await wanted();
      await createObjects(objects);
      const rendered = await docker(
        swarm.config(stackFile),
        { message: `docker stack config could not read ${STACK_FILE}` },
        { ...env, [SPEC_VAR]: '-' },
      );
      const spec = createHash('sha256').update(rendered.stdout).digest('hex').slice(0, 16);
      const now = await deployed();
      const names = Object.keys(now);
      const same = names.length > 0 && names.every((n) => now[n].Spec.Labels?.[LABEL_SPEC] === spec) && now[DB_SERVICE];
      if (!same) {
        const timeoutMs = cfg.upTimeoutMs + 60_000;
        await exec('docker', swarm.deploy(stackFile, stack), {
          cwd: cfg.root,
          env: { ...env, [SPEC_VAR]: spec },
          timeoutMs,
          failure: { message: `docker stack deploy of ${stack} failed`, hint: `see: pnpm db:logs, and docker stack ps ${stack}` },
        });
      }
      if (!same) {
        // The updates it started: api-db's (stop-first: the healthy container to talk to is its
        // successor's), the api's (start-first: its successor healthy, then the old task stopped).
        for (const name of Object.keys(now).filter((n) => now[n].Spec.Mode?.Replicated)) {
          // An update this deploy started has a new start time (a label alone starts none).
          const before = JSON.stringify(now[name].UpdateStatus?.StartedAt ?? null);
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
          if (started !== before && ['paused', 'rollback_paused', 'rollback_completed'].includes(state))
            throw new UserError(
              `the update of ${svc(name)} stopped (${state.replace('_', ' ')}): its new task did not become healthy`,
              `see: docker service ps --no-trunc ${svc(name)}, and pnpm db:logs`,
            );
        }
      }
      await pruneObjects(objects);
      // The api's images of older inputs; one a container still uses is refused, and removed by a later run.
      const appImage = env[imageVar(APP_SERVICE)];
      for (const ref of (await ask(swarm.images(`${stack}-${APP_SERVICE}`))).stdout.split('\n'))
        if (ref && ref !== appImage) await ask(['image', 'rm', ref]);
      return { changed: !same };
    })().catch((e: unknown) => {
      converged = undefined;
      throw e;
    }));

  /** api-db's healthy container on this node. */
  async function dbContainer(): Promise<string> {
    const id = (await ask(swarm.container(stack, DB_SERVICE, true))).stdout.trim().split('\n')[0];
    if (!id) throw new UserError(`${DB_SERVICE} of stack ${stack} is not running (healthy) on this node`, 'start it: pnpm db:up');
    return id;
  }

  /** The stack, current, and its database healthy, before anything goes into api-db. */
  async function ready(): Promise<string> {
    if (Object.keys(await deployed()).length) await converge();
    let id = '';
    await waitFor(
      ctx,
      `waiting for ${DB_SERVICE} to be healthy`,
      cfg.upTimeoutMs,
      async () => (id = (await ask(swarm.container(stack, DB_SERVICE, true))).stdout.trim().split('\n')[0] ?? '') !== '',
      () => `${DB_SERVICE} of stack ${stack} is not healthy after ${Math.ceil(cfg.upTimeoutMs / 1000)}s; see: pnpm db:logs`,
      500,
    );
    return id;
  }

  /**
   * `docker stack rm`, then waits for its network to go: the engine removes it after the command
   * returns, and a deploy meanwhile fails ("network <stack>_default not found").
   */
  async function removeStack(): Promise<void> {
    await ask(swarm.remove(stack)); // not deployed: nothing to remove, not an error
    await waitFor(
      ctx,
      `removing stack ${stack}`,
      60_000,
      async () => !(await ask(swarm.networks(stack))).stdout.trim(),
      () => `the network of stack ${stack} is still there; see: docker network ls --filter label=com.docker.stack.namespace=${stack}`,
      250,
    );
  }

  const admin = async (): Promise<Admin> => ({
    async query(sql, database = 'postgres') {
      const id = await ready();
      const failure = { message: `SQL as the superuser in ${DB_SERVICE} failed`, hint: 'see: pnpm db:logs' };
      const r = await exec('docker', ['exec', '-i', id, '/usr/local/bin/db-admin-sql', database], { cwd: cfg.root, input: sql, failure });
      return r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\x1f'));
    },
  });

  const running = async () => (await ask(swarm.container(stack, DB_SERVICE, false))).stdout.trim() !== '';

  /** `docker exec` arguments from the compose ones of container-tools.ts: `-i` (stdin) in place of Compose's `--no-TTY`. */
  const execArgs = (composeArgs: string[]) => composeArgs.map((a) => (a === '--no-TTY' ? '-i' : a));
  const viaHostFile = (dockerArgs: string[], io: PgToolIo) => {
    const r = hostRedirect(dockerArgs, io);
    return exec(r.cmd, r.args, { cwd: cfg.root, nothrow: true });
  };
  async function dumpDir(id: string, tool: PgTool, args: readonly string[], dir: string): Promise<RunResult> {
    const tarFile = `${dir}.tar`;
    try {
      const r = await viaHostFile(execArgs(containerDirArgs([], id, 'dump', tool, args)), { out: tarFile });
      if (r.code === 0) await unpackDir(ctx, tarFile, dir);
      return r;
    } finally {
      await ctx.fs.rm(tarFile, { force: true });
    }
  }
  async function restoreDir(id: string, tool: PgTool, args: readonly string[], dir: string): Promise<RunResult> {
    await ctx.fs.mkdir(cfg.backupDir, { recursive: true, mode: 0o700 });
    const tarFile = path.join(cfg.backupDir, `.restore-${process.pid}-${randomBytes(3).toString('hex')}.tar`);
    try {
      await packDir(ctx, dir, tarFile);
      return await viaHostFile(execArgs(containerDirArgs([], id, 'restore', tool, args)), { in: tarFile });
    } finally {
      await ctx.fs.rm(tarFile, { force: true });
    }
  }

  /** Runs the stack's job template once with these arguments; resolves to its exit status, its output logged. */
  async function runJob(args: readonly string[]): Promise<number> {
    const template = (await deployed())[MIGRATE_SERVICE];
    if (!template) throw new UserError(`stack ${stack} is not deployed (no ${svc(MIGRATE_SERVICE)})`, 'deploy it: pnpm db:up');
    const name = `${svc(MIGRATE_SERVICE)}-run-${randomBytes(3).toString('hex')}`;
    await docker(jobArgs(template.Spec, name, stack, args), { message: `could not start the ${MIGRATE_SERVICE} job` });
    try {
      let state = '';
      let code = -1;
      await waitFor(
        ctx,
        `running the ${MIGRATE_SERVICE} job`,
        cfg.upTimeoutMs + 60_000,
        async () => {
          const task = (await ask(swarm.taskStates(name))).stdout.trim().split('\n')[0];
          if (!task) return false;
          const [s, c] = (await ask(swarm.task(task))).stdout.trim().split(' ');
          state = s ?? '';
          code = Number(c);
          return ['complete', 'failed', 'rejected', 'shutdown', 'orphaned'].includes(state);
        },
        () => `the ${MIGRATE_SERVICE} job did not finish (its task is ${state || 'not scheduled'}); see: docker service ps ${name}`,
        500,
      );
      const out = await ask(swarm.jobLogs(name));
      for (const l of `${out.stdout}${out.stderr}`.split('\n').filter(Boolean)) log.info(`${MIGRATE_SERVICE} | ${l}`);
      if (state === 'rejected') return 125;
      return state === 'complete' ? 0 : code || 1;
    } finally {
      await ask(swarm.removeService(name));
    }
  }

  return {
    label: 'docker',
    target,
    admin,
    running,
    async reloadTls() {
      // A Swarm secret cannot change: the new key and certificate are new versions, and api-db is
      // updated to them (a restart, stop-first, of a few seconds; open sessions do not survive).
      await converge();
    },
    async restartApp() {
      const r = await converge(); // new versions of the secrets; the services that hold them are updated
      const app = (await deployed())[APP_SERVICE];
      return r.changed && Boolean(app?.Spec.Mode?.Replicated?.Replicas);
    },
    describeData: () => `the Swarm stack ${stack}: its volume ${stack}_${DATA_VOLUME} (all database data), secrets and configs`,
    prepareTools: async () => {},
    async pgTool(tool, args, io = {}) {
      const id = await ready();
      if (io.outDir) return dumpDir(id, tool, args, io.outDir);
      if (io.inDir) return restoreDir(id, tool, args, io.inDir);
      return viaHostFile(execArgs(containerToolArgs([], id, tool, args)), io);
    },
    async up() {
      const t = await target();
      await swarmNode();
      log.step(`deploying stack ${stack} on Docker Swarm (${DB_SERVICE} on port ${cfg.port}, every interface of this node)`);
      await pinData();
      await converge();
      await ready();
      const s = await secrets();
      const timeoutS = Math.ceil(cfg.upTimeoutMs / 1000);
      const appLogin = async (app: Target) => {
        let lastError = '';
        await waitFor(
          ctx,
          'waiting for a TLS login',
          cfg.upTimeoutMs,
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
          () => `${DB_SERVICE} is healthy but no TLS login succeeded within ${timeoutS}s (last error: ${lastError})`,
        );
      };
      const { provisioned } = await settle(ctx, s, {
        admin,
        app: t,
        migrator: await target('migrator'),
        appLogin,
        say: (l) => log.warn(l),
      });
      return { initialised: false, provisioned };
    },
    async down() {
      const was = await running();
      await removeStack();
      return { wasRunning: was };
    },
    async logs(follow) {
      await exec('docker', swarm.logs(svc(DB_SERVICE), follow), { cwd: cfg.root, interactive: true, nothrow: true });
    },
    async shell(args, io) {
      const id = await ready();
      return (
        await exec('docker', ['exec', '-i', ...(io.stdinIsTty ? ['-t'] : []), id, 'bash', ...args], { interactive: true, nothrow: true })
      ).code;
    },
    async psql(args, io) {
      const id = await ready();
      // api-db holds no app_password on Swarm (EXEC_ONLY_SECRETS): `-e PGPASSWORD` without a value
      // makes the docker CLI take it from its own environment, so argv names only the variable.
      const { app } = await secrets();
      return (
        await exec('docker', ['exec', '-i', ...(io.stdinIsTty ? ['-t'] : []), '-e', 'PGPASSWORD', id, '/usr/local/bin/db-psql', ...args], {
          interactive: true,
          nothrow: true,
          env: { PGPASSWORD: app.password },
        })
      ).code;
    },
    async destroy() {
      await removeStack();
      // The volume is freed once the task's container is gone.
      const volume = `${stack}_${DATA_VOLUME}`;
      await waitFor(
        ctx,
        `removing ${volume}`,
        60_000,
        async () => (await ask(['volume', 'rm', '--force', volume])).code === 0 && !(await ask(swarm.volume(stack))).stdout.trim(),
        () => `could not remove the volume ${volume}; see: docker volume inspect ${volume}`,
        500,
      );
      await pruneObjects([]);
      const node = await swarmNode().catch(() => '');
      if (node) await ask(swarm.unlabelNode(stack, node));
    },
    async hasData() {
      const r = await ask(swarm.volume(stack));
      return r.code !== 0 || r.stdout.trim() !== '';
    },
    async migrate(cmd, opts = {}) {
      if (opts.singleTransaction) {
        throw new UsageError(
          '--single-transaction needs the native runtime: golang-migrate, which migrates for docker, commits each file',
          'run without --single-transaction',
        );
      }
      loadMigrations(cfg.migrationsDir, { texts: 'all' });
      await ready(); // the job template carries the current secrets
      const code = await runJob(migrateArgs(cmd));
      if (code !== 0)
        throw new UserError(
          `the ${MIGRATE_SERVICE} job exited with ${code}`,
          'read its message above; for a dirty database: pnpm db:status',
        );
      return undefined;
    },
  };
}

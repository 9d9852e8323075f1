import { randomBytes } from 'node:crypto';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { waitFor } from '../wait.ts';
import { MIGRATE_SERVICE } from './compose.ts';
import { LABEL_STACK } from './swarm-stack.ts';
import { swarm } from './swarm-commands.ts';
import type { SwarmStack } from './swarm-deploy.ts';

// The migration job: db-migrate is deployed as a replicated-job template with 0 replicas; each
// pnpm db:migrate runs a one-shot copy of it with its own words and waits for its exit status.

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the engine's schema, read field by field
type Json = any;

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

/** Runs the stack's job template once with these arguments; resolves to its exit status, its output logged. */
export async function runJob(ctx: Ctx, st: SwarmStack, args: readonly string[]): Promise<number> {
  const { cfg, log } = ctx;
  const { stack, svc, ask } = st;
  const template = (await st.deployed())[MIGRATE_SERVICE];
  if (!template) throw new UserError(`stack ${stack} is not deployed (no ${svc(MIGRATE_SERVICE)})`, 'deploy it: pnpm db:up');
  const name = `${svc(MIGRATE_SERVICE)}-run-${randomBytes(3).toString('hex')}`;
  await st.docker(jobArgs(template.Spec, name, stack, args), { message: `could not start the ${MIGRATE_SERVICE} job` });
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

import path from 'node:path';
import type { Ctx } from '../context.ts';
import { UserError } from '../errors.ts';
import { composeModel, STACK_FILE, STANDBY_STACK_FILE, toStack } from './swarm-stack.ts';

// The text of infra/docker-stack.yml (pnpm stack:generate [--check]): swarm-stack.ts's stack, as YAML
// under a header that says what differs from Compose.

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a JSON-like value
type Json = any;

const HEADER = `# GENERATED from infra/docker-compose.yml by \`pnpm stack:generate\`: do not edit (test/swarm-stack.test.ts
# fails when the two differ). \`pnpm run deploy\` with DB_TARGET=swarm deploys it with \`docker stack deploy\`.
#
# What differs from Compose, and why:
# - Secrets are external Swarm secrets, named by the tool after a keyed hash of their content
#   (PGDEPLOY_SECRET_*): in memory (tmpfs) in the task, encrypted in the Raft log, immutable. A new
#   content is a new secret; the services move to it, then the old one is removed.
# - The files Compose bind-mounts from the repository (postgresql.conf, pg_hba.conf, the scripts)
#   are Swarm configs (PGDEPLOY_CONFIG_*), versioned the same way.
# - depends_on, restart, build, profiles and container_name do not exist in a stack: the tool orders
#   the steps (api-db healthy, roles provisioned, then the migration job), a profile's service is
#   scaled to 0 (ENV_<NAME>_REPLICAS), and a built service runs the image the tool tags.
# - db-migrate is a replicated-job with 0 replicas: a template the tool runs once per pnpm db:migrate.
# - The data volume and the migrations folder are on one node: those services are pinned to the
#   node labelled pg-deploy.<stack>.data=true.
# - endpoint_mode dnsrr: a service's name resolves to its task, with no IPVS virtual IP (which drops
#   idle pooled connections after 15 minutes).
# - Published ports are in host mode and bind every interface of that node (Swarm cannot bind
#   127.0.0.1): firewall them. pg_hba.conf admits TLS logins only.
# - A stateless service (the api) is updated start-first: its successor is healthy before it stops.
#   Its port is held by <name>-publish (infra/swarm/publish.mjs), which forwards each connection to
#   a healthy task: a host-mode port of its own would stop the update for ever.
# - api-db has no app_password: pnpm db:psql hands it to docker exec in the environment, so rotating
#   the app's password updates the api only (the superuser's still restarts api-db).
# - Modes are decimal: 256 is 0400, 292 is 0444, 365 is 0555.
`;

/** YAML for a JSON-like value: block style, every string double-quoted (a JSON string is a YAML one). */
export function toYaml(value: Json, indent = ''): string {
  const key = (k: string) => (/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(k) ? k : JSON.stringify(k));
  const scalar = (v: Json) => (typeof v === 'string' ? JSON.stringify(v) : v === null ? 'null' : String(v));
  const isBlock = (v: Json) => v !== null && typeof v === 'object' && Object.keys(v).length > 0;
  const empty = (v: Json) => (Array.isArray(v) ? '[]' : '{}');
  if (Array.isArray(value)) {
    return value
      .map((v) => {
        if (!isBlock(v)) return `${indent}- ${v !== null && typeof v === 'object' ? empty(v) : scalar(v)}\n`;
        const inner = toYaml(v, `${indent}  `);
        return `${indent}- ${inner.slice(indent.length + 2)}`;
      })
      .join('');
  }
  return Object.entries(value)
    .map(([k, v]) => {
      if (isBlock(v)) return `${indent}${key(k)}:\n${toYaml(v, `${indent}  `)}`;
      return `${indent}${key(k)}: ${v !== null && typeof v === 'object' ? empty(v) : scalar(v)}\n`;
    })
    .join('');
}

const STANDBY_HEADER = `# GENERATED from infra/docker-compose.yml by \`pnpm stack:generate\`: do not edit (test/swarm-stack.test.ts
# fails when the two differ). The hot standby (the Compose service api-db-replica, profile replica) on
# DB_TARGET=swarm: \`pnpm db:replica\` deploys it into the stack of infra/docker-stack.yml (same name,
# without --prune, so nothing else changes), only once it is asked for: a deploy that never ran
# db:replica needs no replication_* secret. It differs from Compose as infra/docker-stack.yml says;
# its tmpfs (the replication password file) is a tmpfs mount.
`;

/** The texts of infra/docker-stack.yml and infra/docker-stack.replica.yml, from the compose file as it is now. */
export async function renderStacks(ctx: Pick<Ctx, 'exec' | 'fs' | 'cfg'>): Promise<Record<string, string>> {
  const { model, standby } = await composeModel(ctx);
  return {
    [STACK_FILE]: `${HEADER}\n${toYaml(toStack(model))}`,
    [STANDBY_STACK_FILE]: `${STANDBY_HEADER}\n${toYaml(toStack(standby))}`,
  };
}

/** Writes the stack files, or (check) says whether they are current. */
export async function generateStack(ctx: Pick<Ctx, 'exec' | 'fs' | 'cfg'>, check: boolean): Promise<{ files: string[]; changed: boolean }> {
  const changed: string[] = [];
  const all = Object.entries(await renderStacks(ctx));
  for (const [rel, want] of all) {
    const file = path.join(ctx.cfg.root, rel);
    const have = await ctx.fs.readFile(file, 'utf8').catch(() => '');
    if (have === want) continue;
    if (check) throw new UserError(`${rel} is not what infra/docker-compose.yml gives`, 'regenerate it: pnpm stack:generate');
    await ctx.fs.writeFile(file, want);
    changed.push(file);
  }
  return { files: changed.length ? changed : all.map(([rel]) => path.join(ctx.cfg.root, rel)), changed: changed.length > 0 };
}

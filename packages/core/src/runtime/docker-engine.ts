import type { Ctx } from '../context.ts';
import { engine } from './compose.ts';

/**
 * The oldest versions this project works with: Engine 25 runs a healthcheck's start_interval (healthy
 * within a second of the server), Compose 2.20.2 passes it on (../shared/docs/facts.md).
 */
export const MIN_ENGINE = [25, 0] as const;
export const MIN_COMPOSE = [2, 20, 2] as const;

/** The leading numbers of a version: `26.1.5+dfsg1` is [26, 1, 5], `v2.29.0` is [2, 29, 0]; none: undefined. */
export function versionOf(s: string): number[] | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(s.trim());
  return m ? m.slice(1).map((x) => Number(x ?? 0)) : undefined;
}

function older(have: readonly number[], want: readonly number[]): boolean {
  for (let i = 0; i < want.length; i++) if ((have[i] ?? 0) !== want[i]) return (have[i] ?? 0) < want[i];
  return false;
}

type Availability = { ok: true } | { ok: false; why: string; hint: string };

/** Says in one line what is missing or too old when Compose v2 or the engine cannot run this project. */
export async function dockerAvailable(ctx: Pick<Ctx, 'exec'>): Promise<Availability> {
  // Probes: the exit code is the answer (127: not installed).
  const ask = (prog: string, args: string[]) => ctx.exec(prog, args, { nothrow: true, timeoutMs: 10_000 });
  // Both at once: every task on docker pays for them.
  const [v2, info] = await Promise.all([ask('docker', engine.composeVersion()), ask('docker', engine.serverVersion())]);
  if (v2.code !== 0) {
    const standalone = await ask('docker-compose', engine.standaloneComposeVersion());
    if (standalone.code !== 0) {
      return {
        ok: false,
        why: 'Docker Compose v2 is not installed (docker compose version failed)',
        hint: 'install Docker Engine with the compose plugin, or set DB_RUNTIME=native',
      };
    }
    // Distributions ship Compose v2 as a docker-compose program too; the docker CLI runs it only as a plugin.
    if ((versionOf(standalone.stdout)?.[0] ?? 1) >= 2) {
      return {
        ok: false,
        why: `Compose v2 is installed as docker-compose (${standalone.stdout.trim()}), but docker compose does not find it: it is not a docker CLI plugin`,
        hint: 'link it where the docker CLI looks for plugins: mkdir -p ~/.docker/cli-plugins && ln -s "$(command -v docker-compose)" ~/.docker/cli-plugins/docker-compose; or set DB_RUNTIME=native',
      };
    }
    return {
      ok: false,
      why: 'only Compose v1 (docker-compose) is installed; this tool needs Compose v2 (docker compose)',
      hint: 'install the docker-compose-plugin package, or set DB_RUNTIME=native',
    };
  }
  if (info.code !== 0 || !info.stdout.trim()) {
    return {
      ok: false,
      why: 'no Docker engine answers (docker info failed)',
      hint: 'start Docker (systemctl start docker), or set DB_RUNTIME=native to use the embedded PostgreSQL',
    };
  }
  // A version without leading numbers (a development build) cannot be compared: not refused.
  const server = info.stdout.trim();
  const sv = versionOf(server);
  if (sv && older(sv, MIN_ENGINE)) {
    return {
      ok: false,
      why: `Docker Engine ${server} is too old: this tool needs ${MIN_ENGINE[0]} or newer, for the healthcheck's start_interval`,
      hint: 'upgrade Docker Engine (https://docs.docker.com/engine/install/), or set DB_RUNTIME=native',
    };
  }
  const composeV = v2.stdout.trim();
  const cv = versionOf(composeV);
  if (cv && older(cv, MIN_COMPOSE)) {
    return {
      ok: false,
      why: `Docker Compose ${composeV} is too old: this tool needs ${MIN_COMPOSE.join('.')} or newer, for the healthcheck's start_interval`,
      hint: 'upgrade the compose plugin (docker-compose-plugin), or set DB_RUNTIME=native',
    };
  }
  return { ok: true };
}

import { selectRuntime } from '@dbkit/core/runtime/select';
import { preflight } from '@dbkit/core/preflight';
import { repairRestoreState } from '@dbkit/core/backup/restore';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:up',
  summary: 'Start PostgreSQL (docker or native) and wait until a TLS login succeeds.',
  flags: { json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx) {
    await preflight(ctx);
    const rt = await selectRuntime(ctx);
    const t0 = ctx.clock().getTime();
    // What an interrupted db:restore can leave (the database refusing connections, or renamed away)
    // is put right before provisioning connects to it or creates an empty one in its place; any
    // other trouble (drift, say) is up()'s to report. A server that was stopped is only reached by
    // up(), whose provisioning then fails on a database refusing connections: it is repaired and
    // up() runs once more.
    const wasRunning = await rt.running();
    if (wasRunning) await repairRestoreState(ctx, rt).catch(() => []);
    const r = await rt.up().catch(async (e) => {
      if (wasRunning || !(await repairRestoreState(ctx, rt).catch(() => [])).length) throw e;
      return rt.up();
    });
    const ms = ctx.clock().getTime() - t0;
    ctx.log.result(`PostgreSQL is up (${rt.label}, 127.0.0.1:${ctx.cfg.port}, TLS verified) in ${ms} ms${r.initialised ? ', new cluster' : ''}`,
      { runtime: rt.label, port: ctx.cfg.port, initialised: r.initialised, ms });
  },
};

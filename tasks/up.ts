import { selectRuntime } from '@dbkit/core/runtime/select';
import { preflight } from '@dbkit/core/preflight';
import { recordEnvironment } from '@dbkit/core/environment';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:up',
  summary: 'Start PostgreSQL (docker or native) and wait until a TLS login succeeds.',
  flags: { json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx) {
    await preflight(ctx);
    const rt = await selectRuntime(ctx);
    const t0 = ctx.clock().getTime();
    const r = await rt.up(); // also repairs what an interrupted db:restore left (restore-state.ts)
    await recordEnvironment(ctx, await rt.target('migrator')); // for the production guard
    const ms = ctx.clock().getTime() - t0;
    ctx.log.result(`PostgreSQL is up (${rt.label}, 127.0.0.1:${ctx.cfg.port}, TLS verified) in ${ms} ms${r.initialised ? ', new cluster' : ''}`,
      { runtime: rt.label, port: ctx.cfg.port, initialised: r.initialised, ms });
  },
};

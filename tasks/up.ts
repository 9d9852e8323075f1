import { selectRuntime } from '@dbkit/core/runtime/select';
import { preflight } from '@dbkit/core/preflight';
import { repairInterruptedRecovery } from '@dbkit/core/backup/pitr';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:up',
  summary: 'Start PostgreSQL (docker or native) and wait until a TLS login succeeds.',
  flags: { json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx) {
    await preflight(ctx);
    const rt = await selectRuntime(ctx);
    const t0 = ctx.clock().getTime();
    await repairInterruptedRecovery(ctx, rt); // a killed db:restore --to-time: finished, or the old data put back
    const r = await rt.up(); // also records the environment, and repairs what an interrupted db:restore left
    const ms = ctx.clock().getTime() - t0;
    ctx.log.result(
      `PostgreSQL is up (${rt.label}, 127.0.0.1:${ctx.cfg.port}, TLS verified) in ${ms} ms${r.initialised ? ', new cluster' : ''}${r.provisioned ? '' : ', roles and grants unchanged'}`,
      { runtime: rt.label, port: ctx.cfg.port, initialised: r.initialised, provisioned: r.provisioned, ms },
    );
  },
};

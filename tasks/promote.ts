import { selectRuntime } from '@dbkit/core/runtime/select';
import { replicaOf } from '@dbkit/core/replica';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:promote',
  summary: 'Promote the standby to a primary (failover); a running primary is stopped first, the old one fenced.',
  destructive: true,
  flags: { json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx) {
    const r = await replicaOf(await selectRuntime(ctx), 'db:promote').promote(ctx.confirm);
    ctx.log.result(
      [
        `promoted the standby on 127.0.0.1:${r.port} in ${r.ms} ms: it takes writes now`,
        r.stoppedPrimary ? 'stopped the old primary first' : 'the old primary was not running',
        `fenced the old primary (${r.fence}): pnpm db:up refuses to start it`,
        `next: point the applications at 127.0.0.1:${r.port} (a multi-host connection string with target_session_attrs=read-write finds it by itself),`,
        'then rebuild a standby from the promoted server as the README says (Failover)',
      ].join('\n'),
      r,
    );
  },
};

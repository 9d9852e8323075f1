import { selectRuntime } from '@dbkit/core/runtime/select';
import { replicaLine, replicaOf } from '@dbkit/core/replica';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:replica',
  summary: 'Add a hot standby on DB_REPLICA_PORT (streaming over verified TLS, a replication slot), or start the one there is.',
  flags: { json: { type: 'boolean', description: 'print the result as JSON' } },
  async run(ctx) {
    const r = await replicaOf(await selectRuntime(ctx), 'db:replica').ensure();
    const did = {
      built: `built a standby on 127.0.0.1:${r.port} from a base backup of the primary, and started it`,
      started: `started the standby on 127.0.0.1:${r.port}`,
      running: `the standby on 127.0.0.1:${r.port} runs already`,
    }[r.action];
    const lines = [
      did,
      ...(r.createdSecrets.length ? [`created the secret files ${r.createdSecrets.join(', ')}`] : []),
      r.syncChanged
        ? `DB_SYNC_REPLICA=${r.sync}: ${r.sync === 'on' ? 'commits on the primary now wait until the standby has them' : 'commits no longer wait for the standby'}`
        : `DB_SYNC_REPLICA=${r.sync}${r.action === 'running' ? ': nothing changed' : ''}`,
      ...(r.status ? [replicaLine(r.status)] : []),
    ];
    ctx.log.result(lines.join('\n'), r);
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { versionArg } from '@dbkit/core/migrations/command';
import { forceProductionFlag, guardProduction } from '@dbkit/core/guard';
import { yesFlag, type Task } from './task.ts';

export const task: Task = {
  name: 'db:migrate:force',
  summary: 'Set the recorded version (and clear the dirty flag) without running any file.',
  usage: '<version>',
  destructive: true,
  flags: { ...yesFlag, ...forceProductionFlag },
  async run(ctx, { positionals, flags }) {
    const version = versionArg(positionals[0]);
    const rt = await selectRuntime(ctx);
    await guardProduction(ctx, rt, 'db:migrate:force', flags, `force ${version}`, `Record version ${version} as applied and clean, without running anything?`);
    await rt.migrate({ kind: 'force', version });
    ctx.log.result(`version forced to ${version}`, { version });
  },
};

import { selectRuntime } from '@dbkit/core/runtime/select';
import { versionArg } from '@dbkit/core/migrations/command';
import { guardProduction, type GuardOptions } from '@dbkit/core/guard';
import { forceProductionFlag, guardOptions, type Task } from './task.ts';

export const task: Task<{ version: number; guard: GuardOptions }> = {
  name: 'db:migrate:force',
  summary: 'Set the recorded version (and clear the dirty flag) without running any file.',
  usage: '<version>',
  destructive: true,
  flags: { ...forceProductionFlag },
  options: ({ positionals, flags }) => ({ version: versionArg(positionals[0]), guard: guardOptions(flags) }),
  async run(ctx, { version, guard }) {
    const rt = await selectRuntime(ctx);
    await guardProduction(
      ctx,
      rt,
      'db:migrate:force',
      guard,
      `force ${version}`,
      `Record version ${version} as applied and clean, without running anything?`,
    );
    await rt.migrate({ kind: 'force', version });
    ctx.log.result(`version forced to ${version}`, { version });
  },
};

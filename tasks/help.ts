import { UsageError } from '@dbkit/core/errors';
import type { Flag, Task } from './task.ts';

/** Text for one task or all of them, made from the registry: never written by hand. */
export function helpText(tasks: readonly Task[], name?: string): string {
  if (name) {
    const t = tasks.find((x) => x.name === name || x.name === `db:${name}`);
    if (!t) throw new UsageError(`no task named "${name}"`, 'pnpm help lists them');
    const all: Record<string, Flag> = { ...t.flags, help: { type: 'boolean', short: 'h', description: 'show this help' } };
    const flags = Object.entries(all).map(
      ([k, f]) => `  --${k}${f.type === 'string' ? ' <value>' : ''}${f.short ? `, -${f.short}` : ''}`.padEnd(24) + f.description,
    );
    return [`pnpm ${t.name}${t.usage ? ` ${t.usage}` : ''}`, '', t.summary, t.destructive ? 'Destroys data: asks first; --yes answers.' : '', '', 'Flags:', ...flags].filter((l, i, a) => l || a[i - 1]).join('\n');
  }
  const width = Math.max(...tasks.map((t) => t.name.length)) + 2;
  return [
    'Tasks (pnpm <task> [args]; pnpm <task> --help for its flags):',
    ...tasks.map((t) => `  ${t.name.padEnd(width)}${t.summary}${t.destructive ? ' [asks]' : ''}`),
    `  ${'deploy'.padEnd(width)}pnpm run deploy: secrets and TLS -> up -> migrate, via turbo`,
  ].join('\n');
}

export function helpTask(all: () => readonly Task[]): Task {
  return {
    name: 'help',
    summary: 'List the tasks, or explain one: pnpm help db:migrate.',
    usage: '[task]',
    needsNoRuntime: true,
    async run(ctx, { positionals }) {
      ctx.log.result(helpText(all(), positionals[0]));
    },
  };
}

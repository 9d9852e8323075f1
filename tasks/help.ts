import { UsageError } from '@dbkit/core/errors';
import type { Flag, Task } from './task.ts';

/** pnpm's own commands shadow our scripts of the same name: those need `pnpm run`. */
const PNPM_COMMANDS = new Set(['help', 'deploy']);

/** How a person types a task. */
export const invocation = (name: string) => `pnpm ${PNPM_COMMANDS.has(name) ? 'run ' : ''}${name}`;

/** The command that shows our help: the list, or one task's (also for a pass-through task, whose --help is its program's). */
export const helpCommand = (task?: string) => `${invocation('help')}${task ? ` ${task}` : ''}`;

/** What makes a destructive task destroy (db:secrets --force, db:migrate down or goto); undefined when it always does. */
const onlyWith = (t: Task<unknown>) => {
  const d = t.destructive;
  if (!d || d === true) return undefined;
  if ('withFlag' in d) return `--${d.withFlag}`;
  if ('verbs' in d) return d.verbs.join(' or ');
  return undefined;
};

/** Text for one task or all of them, made from the registry: never written by hand. */
export function helpText(tasks: readonly Task<unknown>[], name?: string): string {
  if (name) {
    const t = tasks.find((x) => x.name === name || x.name === `db:${name}`);
    if (!t) throw new UsageError(`no task named "${name}"`, `the tasks: ${helpCommand()}`);
    const all: Record<string, Flag> = {
      ...t.flags,
      target: { type: 'string', description: 'compose or swarm: DB_TARGET for this run' },
      help: { type: 'boolean', short: 'h', description: 'show this help' },
    };
    const flags = Object.entries(all).map(
      ([k, f]) => `  --${k}${f.type === 'string' ? ' <value>' : ''}${f.short ? `, -${f.short}` : ''}`.padEnd(24) + f.description,
    );
    if (t.passThrough) {
      return [
        `${invocation(t.name)}${t.usage ? ` ${t.usage}` : ''}`,
        '',
        t.summary,
        '',
        'Every argument after the task name, --help included, passes through untouched (one leading -- is',
        `dropped), and the exit status is the program's. This help: ${helpCommand(t.name)}`,
        'Only in first place, --target compose|swarm sets DB_TARGET for this run.',
      ].join('\n');
    }
    return [
      `${invocation(t.name)}${t.usage ? ` ${t.usage}` : ''}`,
      '',
      t.summary,
      t.destructive ? `${onlyWith(t) ? `With ${onlyWith(t)}` : 'Destroys data'}: asks first; --yes answers.` : '',
      '',
      'Flags:',
      ...flags,
    ]
      .filter((l, i, a) => l || a[i - 1])
      .join('\n');
  }
  const width = Math.max(...tasks.map((t) => t.name.length)) + 2;
  return [
    `Tasks (pnpm <task> [args]; ${helpCommand('<task>')} for one task's flags):`,
    ...tasks.map((t) => `  ${t.name.padEnd(width)}${t.summary}${t.destructive ? ` [${onlyWith(t) ? `${onlyWith(t)} ` : ''}asks]` : ''}`),
    `  ${'deploy'.padEnd(width)}pnpm run deploy: secrets and TLS -> up -> migrate, via turbo`,
  ].join('\n');
}

export function helpTask(all: () => readonly Task<unknown>[]): Task {
  return {
    name: 'help',
    summary: `List the tasks, or explain one: ${helpCommand('db:migrate')}.`,
    usage: '[task]',
    async run(ctx, { positionals }) {
      ctx.log.result(helpText(all(), positionals[0]));
    },
  };
}

import path from 'node:path';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadEnv, parseConfig } from '@dbkit/core/config';
import { zxExec } from '@dbkit/core/exec';
import { createLog, processSink, type Log } from '@dbkit/core/output';
import { confirmDestructive, promptsAsk, refuseUnanswerable, type Confirm } from '@dbkit/core/confirm';
import { UserError, UsageError } from '@dbkit/core/errors';
import { redact } from '@dbkit/core/redact';
import type { Ctx } from '@dbkit/core/context';
import { tasks } from './registry.ts';
import { destroys, maxPositionals, type Args, type Task } from './task.ts';
import { helpCommand } from './help.ts';

const COMMON = {
  help: { type: 'boolean', short: 'h' },
  verbose: { type: 'boolean' },
  // DB_TARGET for this run (it wins over the environment and the .env files).
  target: { type: 'string' },
} as const;

const TARGETS = ['compose', 'swarm'];

/**
 * A pass-through task's --target, only in first place (`pnpm db:psql --target swarm -c ...`): every
 * argument after it is its program's.
 */
function leadingTarget(rest: string[]): { target?: string; rest: string[] } {
  if (rest[0] === '--target') {
    if (rest.length < 2) throw new UsageError('--target needs a value: compose or swarm', 'e.g. --target swarm');
    return { target: rest[1], rest: rest.slice(2) };
  }
  if (rest[0]?.startsWith('--target=')) return { target: rest[0].slice('--target='.length), rest: rest.slice(1) };
  return { rest };
}

/** The --target value, checked: a wrong one is a usage error before anything runs. */
function checkTarget(value: string | boolean | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !TARGETS.includes(value))
    throw new UsageError(`--target ${JSON.stringify(value)} is not one of ${TARGETS.join(', ')}`, 'use --target compose or --target swarm');
  return value;
}

/** Our flags, strictly: an unknown one, or more positionals than the task's `usage` shows, is a usage error. */
function parse(task: Task<unknown>, rest: string[]): Args {
  let parsed;
  try {
    const options = { ...COMMON } as Record<string, { type: 'boolean' | 'string'; short?: string }>;
    for (const [k, f] of Object.entries(task.flags ?? {})) options[k] = f.short ? { type: f.type, short: f.short } : { type: f.type };
    parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(`${task.name}: ${(e as Error).message.split('\n')[0]}`, helpCommand(task.name));
  }
  const max = maxPositionals(task.usage);
  if (parsed.positionals.length > max) {
    const extra = parsed.positionals
      .slice(max)
      .map((p) => JSON.stringify(p))
      .join(' ');
    const takes = max === 0 ? 'takes no arguments' : `takes at most ${max}: ${task.usage}`;
    throw new UsageError(
      `${task.name}: unexpected argument${parsed.positionals.length - max > 1 ? 's' : ''} ${extra} (${task.name} ${takes})`,
      helpCommand(task.name),
    );
  }
  return { flags: parsed.values as Args['flags'], positionals: parsed.positionals };
}

/** A pass-through task's arguments, untouched but for one leading `--` (pnpm hands it on: `pnpm db:psql -- -c ...`). */
function passThrough(rest: string[]): Args {
  return { flags: {}, positionals: rest[0] === '--' ? rest.slice(1) : rest };
}

/** Runs a task; a destructive run nobody can answer is refused before it starts, others get one question (ctx.confirm). */
export async function runTask<O>(task: Task<O>, ctx: Omit<Ctx, 'confirm'>, args: Args): Promise<number | void> {
  const opts = task.options ? task.options(args) : (args as O);
  const d = destroys(task, args);
  if (!d) return task.run({ ...ctx, confirm: notDestructive(task.name) }, opts);
  const yes = Boolean(args.flags.yes);
  refuseUnanswerable(ctx, d.as, yes);
  let answered: Promise<void> | undefined;
  return task.run({ ...ctx, confirm: (question) => (answered ??= confirmDestructive(ctx, d.as, question, yes)) }, opts);
}

/** Asking without the `destructive` mark is a bug: help and the refusal read the mark. */
const notDestructive =
  (name: string): Confirm =>
  async () => {
    throw new Error(`${name} asked for confirmation, but is not marked destructive for these arguments`);
  };

/** The one entry point: parse, build the context, run the task, turn errors into exit codes. */
export async function main(argv: string[], realEnv: Record<string, string | undefined>): Promise<number> {
  const sink = processSink(realEnv);
  let log: Log = createLog(sink);
  // Until the flags are parsed (a pass-through task's --verbose is its program's).
  let verbose = argv.includes('--verbose') && !tasks.find((t) => t.name === argv[0])?.passThrough;
  try {
    const [name, ...rest] = argv;
    const task = tasks.find((t) => t.name === (name ?? 'help'));
    if (!task) throw new UsageError(`unknown task "${name}"`, `the tasks: ${helpCommand()}`);
    const leading = task.passThrough ? leadingTarget(rest) : { rest };
    const { flags, positionals } = task.passThrough ? passThrough(leading.rest) : parse(task, rest);
    verbose = Boolean(flags.verbose);
    const target = checkTarget(task.passThrough ? leading.target : flags.target);
    if (flags.help) {
      const { helpText } = await import('./help.ts');
      sink.out(helpText(tasks, task.name) + '\n');
      return 0;
    }
    // dist/cli.js and tasks/cli.ts both sit one level below the project root.
    const root = realEnv.DB_PROJECT_ROOT || path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
    const env = await loadEnv(root, target ? { ...realEnv, DB_TARGET: target } : realEnv);
    const cfg = parseConfig(root, env);
    log = createLog(sink, { json: Boolean(flags.json) });
    const ctx: Omit<Ctx, 'confirm'> = {
      cfg,
      exec: zxExec(env),
      fs,
      log,
      ask: promptsAsk,
      interactive: Boolean(process.stdin.isTTY && process.stderr.isTTY) && env.CI !== 'true',
      clock: () => new Date(),
    };
    return (await runTask(task, ctx, { flags, positionals })) ?? 0;
  } catch (e) {
    if (e instanceof UserError) {
      log.info(`error: ${e.message}`);
      if (e.hint) log.info(`hint: ${e.hint}`);
      if (verbose && e.stack) log.info(e.stack);
      return e.exitCode;
    }
    const err = e as Error;
    log.info(`error: ${redact(err.message ?? String(e))}`);
    log.info(verbose ? redact(err.stack ?? '') : 'hint: this looks like a bug; run again with --verbose for the stack');
    return 1;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2), { ...process.env }).then((code) => {
    process.exitCode = code;
  });
}

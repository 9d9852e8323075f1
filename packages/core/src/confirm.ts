import { UserError } from './errors.ts';

/** A yes/no question (default No), or with `initial` a line of text (`initial` when left empty). */
export type Ask = (question: string, initial?: string) => Promise<boolean | string>;

/** The one question of a destructive run; resolves on yes, throws otherwise. */
export type Confirm = (question: string) => Promise<void>;

/** Questions on stderr. `prompts` is loaded only when a question is asked. */
export const promptsAsk: Ask = async (question, initial) => {
  const { default: prompts } = await import('prompts');
  if (initial !== undefined) {
    const a = await prompts({ type: 'text', name: 'v', message: question, initial, stdout: process.stderr });
    return typeof a.v === 'string' && a.v ? a.v : initial;
  }
  let cancelled = false;
  const answer = await prompts(
    { type: 'confirm', name: 'ok', message: question, initial: false, stdout: process.stderr },
    {
      onCancel: () => {
        cancelled = true;
      },
    },
  );
  return !cancelled && answer.ok === true;
};

/** No terminal and no --yes: nobody can answer, so refuse rather than hang or guess. */
export function refuseUnanswerable(ctx: { interactive: boolean }, task: string, yes: boolean): void {
  if (!yes && !ctx.interactive) {
    throw new UserError(
      `${task} needs confirmation and there is no terminal to ask`,
      `re-run with --yes if you mean it: pnpm ${task} --yes`,
    );
  }
}

/** Asks before a destructive step; --yes answers, and a "no" fails (exit 1), never a quiet success. */
export async function confirmDestructive(
  ctx: { ask: Ask; interactive: boolean },
  task: string,
  question: string,
  yes: boolean,
): Promise<void> {
  if (yes) return;
  refuseUnanswerable(ctx, task, yes);
  if ((await ctx.ask(question)) !== true) throw new UserError(`${task}: aborted, nothing was changed`);
}

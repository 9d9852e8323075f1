import { UserError } from './errors.ts';

export type Ask = (question: string) => Promise<boolean>;

/** The production question, on stderr, default No. `prompts` is loaded only when a question is asked. */
export const promptsAsk: Ask = async (question) => {
  const { default: prompts } = await import('prompts');
  let cancelled = false;
  const answer = await prompts(
    { type: 'confirm', name: 'ok', message: question, initial: false, stdout: process.stderr },
    { onCancel: () => { cancelled = true; } },
  );
  return !cancelled && answer.ok === true;
};

/**
 * Asks before a destructive step. `--yes` answers; with no terminal and no `--yes` it refuses rather
 * than hang or guess; a "no" is a failure (exit 1), never a quiet success.
 */
export async function confirmDestructive(
  ctx: { ask: Ask; interactive: boolean },
  task: string,
  question: string,
  yes: boolean,
): Promise<void> {
  if (yes) return;
  if (!ctx.interactive) {
    throw new UserError(`${task} needs confirmation and there is no terminal to ask`, `re-run with --yes if you mean it: pnpm ${task} --yes`);
  }
  if (!(await ctx.ask(question))) throw new UserError(`${task}: aborted, nothing was changed`);
}

import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import type { CliResult } from './project.ts';

/** `file` does not exist: `what` names it in the failure. */
export async function assertAbsent(file: string, what: string): Promise<void> {
  await fs.stat(file).then(
    () => assert.unreachable(what),
    () => undefined,
  );
}

/** The error `p` rejects with, as the CLI prints it (message, hint); fails the test if `p` resolves. */
export async function rejection(p: Promise<unknown>, what: string): Promise<{ message: string; hint: string }> {
  const e = await p.then(
    () => undefined,
    (e: Error & { hint?: string }) => e,
  );
  assert.ok(e, what);
  return { message: e!.message, hint: e!.hint ?? '' };
}

/** What a clear failure shows besides its error line. */
export interface ClearFailure {
  /** What the hint line (the first, if there are several) matches. */
  hint?: RegExp;
  /** The exit code: 1 unless said (2 for a usage error). */
  code?: number;
  /** The error line is the first line on stderr: no progress line before it. */
  first?: boolean;
}

/** The hint the CLI prints under an error it did not expect. */
const BUG_HINT = /^hint: this looks like a bug/;

/**
 * The contract for a failure the user can act on: exit 1 (or `expect.code`); exactly one `error:`
 * line, matching `what`; a `hint:` line, matching `expect.hint`, and not the one for a bug; no stack
 * trace. Returns the error line and the hint's text (after `hint: `).
 */
export function failsClearly(r: CliResult, what: RegExp, expect: ClearFailure = {}): { error: string; hint: string } {
  const shown = `exit ${r.code}\n${r.stdout}${r.stderr}`;
  assert.is(r.code, expect.code ?? 1, `the exit code:\n${shown}`);
  const lines = r.stderr.trim().split('\n');
  const errors = lines.filter((l) => l.startsWith('error: '));
  assert.is(errors.length, 1, `one error line in:\n${r.stderr}`);
  const [error] = errors;
  if (expect.first) assert.is(lines[0], error, `the error line first:\n${r.stderr}`);
  assert.match(error, what, `the error line: ${error}`);
  const hint = lines.find((l) => l.startsWith('hint: '));
  assert.ok(hint, `no hint line in:\n${r.stderr}`);
  assert.not.match(hint!, BUG_HINT, `an unexpected error:\n${r.stderr}`);
  if (expect.hint) assert.match(hint!, expect.hint, `the hint line: ${hint}`);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
  return { error, hint: hint!.slice('hint: '.length) };
}

/** An expected failure: the top-level handler prints `error: <message>` and `hint: <hint>`, no stack. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'UserError';
  }
}

/** Wrong flags or arguments: exit code 2, as the usage contract says. */
export class UsageError extends UserError {
  constructor(message: string, hint?: string) {
    super(message, hint, 2);
    this.name = 'UsageError';
  }
}

/** The last non-empty line of a command's output: what a one-line error quotes. */
export const lastLine = (s: string): string => s.trim().split('\n').filter(Boolean).pop() ?? '';

/** What a command's failure means to the user: the message's start (its last stderr line follows) and the fix. */
export interface Failure {
  message: string;
  hint?: string;
}

/**
 * A command we started exited non-zero. Its arguments never hold secrets, so naming them is safe.
 * With a `failure`, the message is the caller's words and the command's last stderr line.
 */
export class CommandError extends UserError {
  constructor(
    readonly cmd: string,
    readonly args: readonly string[],
    readonly code: number,
    readonly stderr: string,
    failure?: Failure,
  ) {
    const tail = stderr.trim().split('\n').slice(-3).join(' | ');
    super(
      failure
        ? `${failure.message}: ${lastLine(stderr) || `${cmd} exited with ${code}`}`
        : `${cmd} ${args.slice(0, 3).join(' ')}${args.length > 3 ? ' ...' : ''} exited with ${code}${tail ? `: ${tail}` : ''}`,
      failure?.hint,
    );
    this.name = 'CommandError';
  }
}

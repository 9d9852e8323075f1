/** An expected failure: the top-level handler prints `error: <message>` and `hint: <hint>`, no stack. */
export class UserError extends Error {
  constructor(message: string, readonly hint?: string, readonly exitCode = 1) {
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

/** A command we started exited non-zero. Its arguments never hold secrets, so naming them is safe. */
export class CommandError extends UserError {
  constructor(readonly cmd: string, readonly args: readonly string[], readonly code: number, readonly stderr: string, hint?: string) {
    const tail = stderr.trim().split('\n').slice(-3).join(' | ');
    super(`${cmd} ${args.slice(0, 3).join(' ')}${args.length > 3 ? ' ...' : ''} exited with ${code}${tail ? `: ${tail}` : ''}`, hint);
    this.name = 'CommandError';
  }
}

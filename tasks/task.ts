import type { Ctx } from '@dbkit/core/context';

export interface Flag {
  type: 'boolean' | 'string';
  short?: string;
  description: string;
}

export interface Args {
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** One task: its metadata (the registry builds `help` from it) and a thin `run`. */
export interface Task {
  name: string;
  summary: string;
  /**
   * Positional arguments, as shown in help: `<name>`, `[N]`, `[up [N] | down N]`. The entry point
   * also reads it: more positionals than it shows (none without it) are a usage error.
   */
  usage?: string;
  flags?: Record<string, Flag>;
  /** Destroys data: asks first, and takes --yes. */
  destructive?: boolean;
  /**
   * Everything after the task name goes to the program it runs untouched (psql, a shell), `--help`
   * included; only one leading `--` is dropped. No flag of ours is parsed, so `flags` is empty.
   */
  passThrough?: boolean;
  /** Returns the exit code (0 when omitted). */
  run(ctx: Ctx, args: Args): Promise<number | void>;
}

export const yesFlag: Record<string, Flag> = {
  yes: { type: 'boolean', short: 'y', description: 'answer yes to the confirmation (needed without a terminal)' },
};

/**
 * The most positionals a `usage` string shows: the longest of its alternatives (`[up [N] | down N]`
 * is 2), none without one, no limit after a `...`. `--flags` written in it are not positionals.
 */
export function maxPositionals(usage = ''): number {
  const tokens = usage.match(/<[^>]*>|[[\]|]|[^\s[\]|<>]+/g) ?? [];
  let i = 0;
  const alternatives = (): number => {
    let most = sequence();
    while (tokens[i] === '|') {
      i++;
      most = Math.max(most, sequence());
    }
    return most;
  };
  const sequence = (): number => {
    let n = 0;
    while (i < tokens.length && tokens[i] !== '|' && tokens[i] !== ']') {
      const t = tokens[i++];
      if (t === '[') {
        n += alternatives();
        i++; // its ]
      } else if (t.endsWith('...') || t.endsWith('...>')) n = Infinity;
      else if (!t.startsWith('-')) n++;
    }
    return n;
  };
  return alternatives();
}

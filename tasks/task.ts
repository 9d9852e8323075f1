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
  /** Positional arguments, as shown in help: `<name>`, `[N]`. */
  usage?: string;
  flags?: Record<string, Flag>;
  /** Destroys data: asks first, and takes --yes. */
  destructive?: boolean;
  /** Reads no configuration and touches nothing (help, create). */
  needsNoRuntime?: boolean;
  /** Returns the exit code (0 when omitted). */
  run(ctx: Ctx, args: Args): Promise<number | void>;
}

export const yesFlag: Record<string, Flag> = {
  yes: { type: 'boolean', short: 'y', description: 'answer yes to the confirmation (needed without a terminal)' },
};

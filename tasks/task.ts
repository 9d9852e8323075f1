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

/** One task: its metadata (the registry builds `help` from it) and a thin `run`, given `O` (default: the arguments). */
export interface Task<O = Args> {
  name: string;
  summary: string;
  /** Positionals as help shows them (`[N]`, `<name>`); more than it shows are a usage error. */
  usage?: string;
  flags?: Record<string, Flag>;
  /** Destroys data: the entry point adds --yes and gives `run` one question (ctx.confirm), default No. */
  destructive?: Destructive;
  /** Every argument, --help too, goes untouched to the program it runs (psql, a shell); one leading `--` is dropped. */
  passThrough?: boolean;
  /** The arguments as `run` takes them; its usage errors come first, before a destructive run is refused. */
  options?(args: Args): O;
  /** Returns the exit code (0 when omitted). */
  run(ctx: Ctx, opts: O): Promise<number | void>;
}

/** Always, only with a flag (db:secrets --force), never with one (db:delete --dry-run), or for some verbs (db:migrate down). */
export type Destructive = true | { withFlag: string } | { unlessFlag: string } | { verbs: readonly string[] };

/** Whether this run destroys data, and how its messages name it (`db:secrets --force`). */
export function destroys(task: Task<unknown>, args: Args): { as: string } | undefined {
  const d = task.destructive;
  if (!d) return undefined;
  if (d !== true && 'withFlag' in d) return args.flags[d.withFlag] ? { as: `${task.name} --${d.withFlag}` } : undefined;
  if (d !== true && 'verbs' in d) {
    const verb = args.positionals[0];
    return verb !== undefined && d.verbs.includes(verb) ? { as: `${task.name} ${verb}` } : undefined;
  }
  if (d !== true && 'unlessFlag' in d && args.flags[d.unlessFlag]) return undefined;
  return { as: task.name };
}

/** A task as the entry point and help see it: a destructive one takes --yes. */
export function withImpliedFlags<O>(task: Task<O>): Task<O> {
  return task.destructive ? { ...task, flags: { ...yesFlag, ...task.flags } } : task;
}

const yesFlag: Record<string, Flag> = {
  yes: { type: 'boolean', short: 'y', description: 'answer yes to the confirmation (needed without a terminal)' },
};

/** The production guard's flag, and the safety backup's. */
export const forceProductionFlag: Record<string, Flag> = {
  'force-production': { type: 'boolean', description: 'allow it on a production database (who and when are logged)' },
};
export const noBackupFlag: Record<string, Flag> = {
  'no-backup': { type: 'boolean', description: 'skip the safety backup taken first' },
};

/** Those flags as the library's options. */
export function guardOptions(flags: Args['flags']): { forceProduction: boolean; noBackup: boolean } {
  return { forceProduction: Boolean(flags['force-production']), noBackup: Boolean(flags['no-backup']) };
}

/** The most positionals `usage` shows: its longest alternative (`[up [N] | down N]` is 2); `...` is no limit. */
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

/** The --jobs flag of the tasks that restore (db:restore, db:backup:verify). */
export const restoreJobsFlag: Record<string, Flag> = {
  jobs: { type: 'string', description: 'dir-format backups: pg_restore processes (default: as many as the dump used)' },
};

/** db:restore's point-in-time flags: replay the WAL archive onto a base backup (db:backup --physical). */
export const pitrFlags: Record<string, Flag> = {
  'to-time': {
    type: 'string',
    description: 'point-in-time recovery to this moment ("2026-12-01 14:03:07", UTC without a zone) from a base backup and the WAL archive',
  },
  'to-lsn': { type: 'string', description: 'point-in-time recovery to this WAL location (e.g. 0/3000060)' },
};

/** db:backup --physical. */
export const physicalFlag: Record<string, Flag> = {
  physical: {
    type: 'boolean',
    description: 'a base backup of the whole cluster (pg_basebackup) for point-in-time recovery; arms WAL archiving',
  },
};

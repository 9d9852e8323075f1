import fs from 'node:fs/promises';
import type { Config } from './config.ts';
import type { Exec } from './exec.ts';
import type { Log } from './output.ts';
import type { Ask, Confirm } from './confirm.ts';

/** Every side effect a task has, built once at the entry point; tests wire their own. */
export interface Ctx {
  cfg: Config;
  exec: Exec;
  fs: typeof fs;
  log: Log;
  ask: Ask;
  /** The destructive run's one question, from the entry point: --yes answers it; other runs may not ask. */
  confirm: Confirm;
  /** A person can answer questions (stdin and stderr are terminals). */
  interactive: boolean;
  clock: () => Date;
}

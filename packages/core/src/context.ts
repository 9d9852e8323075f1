import fs from 'node:fs/promises';
import type { Config } from './config.ts';
import type { Exec } from './exec.ts';
import type { Log } from './output.ts';
import type { Ask } from './confirm.ts';

/**
 * Every side effect a task has goes through here, built once at the entry point: production wires
 * zx, prompts and the real clock; tests wire a real server, a recording exec or injected answers.
 */
export interface Ctx {
  cfg: Config;
  exec: Exec;
  fs: typeof fs;
  log: Log;
  ask: Ask;
  /** A person can answer questions (stdin and stderr are terminals). */
  interactive: boolean;
  clock: () => Date;
}

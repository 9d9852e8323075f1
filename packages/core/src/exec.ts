import { spawn as nodeSpawn } from 'node:child_process';
import { CommandError } from './errors.ts';

export interface RunOptions {
  cwd?: string;
  /** Added to the base environment; `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  /** Written to the child's stdin: the way to hand a secret to a process without putting it in argv. */
  input?: string;
  /** Run as this uid/gid (PostgreSQL refuses to run as root). */
  asUser?: { uid: number; gid: number };
  /** Return the exit code instead of throwing: for probes whose exit code is the answer. */
  nothrow?: boolean;
  /** Inherit the terminal (shells, psql, log following). */
  interactive?: boolean;
  timeoutMs?: number;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The one way the tool starts processes. Commands are data: a program and an argument array. */
export type Exec = (cmd: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>;

/** Production exec on zx's `$`; zx is loaded on first use so tasks that start no process never pay for it. */
export function zxExec(baseEnv: Record<string, string | undefined>): Exec {
  return async (cmd, args, opts = {}) => {
    const { $ } = await import('zx/core'); // the shell runner alone: zx's full entry loads globbing, YAML and more (150 ms)
    // zx runs every command through `bash -c` with a socket for stdin. bash with such a stdin takes
    // itself for a remote shell and sources ~/.bashrc first (here: pyenv, half a second a command)
    // unless SHLVL says it runs below another shell: at least 1. Turbo drops SHLVL, and a process
    // that is the last command of a `bash -c` (cron lines, `( cmd & )`) gets SHLVL=0.
    const env: Record<string, string | undefined> = { ...baseEnv, ...opts.env };
    env.SHLVL = String(Math.max(1, Number(env.SHLVL) || 0));
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
    const user = opts.asUser;
    const p = $({
      cwd: opts.cwd,
      env: env as NodeJS.ProcessEnv,
      input: opts.input,
      nothrow: true,
      quiet: true,
      verbose: false,
      stdio: opts.interactive ? 'inherit' : 'pipe',
      timeout: opts.timeoutMs,
      spawn: (user ? (c: string, a: readonly string[], o: object) => nodeSpawn(c, a, { ...o, uid: user.uid, gid: user.gid }) : nodeSpawn) as typeof nodeSpawn,
    })`${cmd} ${args}`;
    const out = await p;
    const result = { code: out.exitCode ?? 1, stdout: out.stdout, stderr: out.stderr };
    if (result.code !== 0 && !opts.nothrow) throw new CommandError(cmd, args, result.code, result.stderr);
    return result;
  };
}

import { spawn as nodeSpawn } from 'node:child_process';
import { CommandError, type Failure } from './errors.ts';

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
  /** What a non-zero exit means to the user, thrown as a CommandError with the last stderr line. */
  failure?: Failure;
  /** Inherit the terminal (shells, psql, log following). */
  interactive?: boolean;
  timeoutMs?: number;
  /** The file-creation mask of the command (0o077: what it creates is the owner's only, from the start). */
  umask?: number;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The one way the tool starts processes. Commands are data: a program and an argument array. */
export type Exec = (cmd: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>;

/**
 * The shell every non-interactive command runs under, so that it dies with the tool however the
 * tool ends (an error, Ctrl-C, SIGTERM, even SIGKILL, which no handler of ours would see). It runs
 * the command in a process group of its own (spawn's `detached`) beside a watcher that reads a pipe
 * from the tool (fd 3) which nothing ever writes: when the tool dies, the kernel closes the tool's
 * end, the read returns, and the watcher signals the whole group (the command and whatever it
 * started: pg_dump's and pg_restore's workers too), SIGTERM then SIGKILL a second later. A server
 * that pg_ctl starts is in a session of its own (pg_ctl calls setsid) and stays up.
 *   sh -c SUPERVISE pg-deploy UMASK|- PROGRAM ARGS...
 */
export const SUPERVISE = [
  'u="$1"; shift',
  '[ "$u" = - ] || umask "$u"',
  // The watcher ignores the TERM it sends its own group, so that it can follow with KILL; until then
  // it dies of TERM, as it must when a timeout (zx) signals the tree, or its fd 3 keeps the call open.
  "( read -r _ <&3; trap '' TERM; kill -TERM 0 2>/dev/null; sleep 1; kill -KILL 0 2>/dev/null ) </dev/null >/dev/null 2>&1 &",
  'w=$!',
  '"$@" 3<&-',
  's=$?',
  'kill -KILL "$w" 2>/dev/null',
  'exit "$s"',
].join('\n');

type SpawnOpts = { shell?: string | boolean; stdio?: unknown; uid?: number; gid?: number } & Record<string, unknown>;

/**
 * zx's spawn, through SUPERVISE: zx hands over one shell command line (`cmd` with shell: bash),
 * which runs as `bash -c LINE` below the supervising sh, as node would have run it.
 */
export function supervisedSpawn(umask: number | undefined, user?: { uid: number; gid: number }) {
  return (cmd: string, args: readonly string[], o: SpawnOpts) => {
    const line = [cmd, ...args].join(' ');
    const shell = typeof o.shell === 'string' ? o.shell : '/bin/sh';
    const stdio = Array.isArray(o.stdio) ? [...o.stdio] : [o.stdio ?? 'pipe', o.stdio ?? 'pipe', o.stdio ?? 'pipe'];
    return nodeSpawn(
      '/bin/sh',
      ['-c', SUPERVISE, 'pg-deploy', umask === undefined ? '-' : umask.toString(8).padStart(3, '0'), shell, '-c', line],
      {
        ...o,
        shell: false,
        detached: true,
        stdio: [...stdio.slice(0, 3), 'pipe'],
        ...(user && { uid: user.uid, gid: user.gid }),
      } as Parameters<typeof nodeSpawn>[2],
    );
  };
}

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
      // A terminal's program (a shell, psql, tail -F) stays in our process group, where the
      // terminal's signals reach it; everything else runs supervised, so it dies with the tool.
      spawn: (opts.interactive
        ? user
          ? (c: string, a: readonly string[], o: object) => nodeSpawn(c, a, { ...o, uid: user.uid, gid: user.gid })
          : nodeSpawn
        : supervisedSpawn(opts.umask, user)) as typeof nodeSpawn,
    })`${cmd} ${args}`;
    const out = await p;
    const result = { code: out.exitCode ?? 1, stdout: out.stdout, stderr: out.stderr };
    if (result.code !== 0 && !opts.nothrow) throw new CommandError(cmd, args, result.code, result.stderr, opts.failure);
    return result;
  };
}

import { watch } from 'node:fs';
import { spawnCli } from './engine.ts';
import type { CliResult } from './project.ts';

/** When to kill: once a line of the task's stderr matches, or once a check on its files holds (re-checked on every change in `dir`); then `afterMs` later. */
export interface KillPoint {
  line?: RegExp;
  check?: { dir: string; holds: () => Promise<boolean> };
  /** Measured from the task's start when there is neither line nor check. */
  afterMs: number;
  label: string;
}

/**
 * Runs the CLI and SIGKILLs it at `at`. Resolves with its output and whether the kill landed
 * before it finished on its own. Bounded: a run that never reaches the point is killed after 120 s
 * and fails the test.
 */
export async function killAt(args: string[], env: Record<string, string>, at: KillPoint): Promise<CliResult & { killed: boolean }> {
  const { child, done } = spawnCli(args, env);
  let finished = false;
  const ended = done.then((r) => ((finished = true), r));
  let stderr = '';
  const reached = new Promise<void>((resolve) => {
    if (at.line) {
      child.stderr!.on('data', (d) => {
        stderr += d;
        if (at.line!.test(stderr)) resolve();
      });
    } else if (at.check) {
      const check = at.check;
      let busy = false;
      const test = async () => {
        if (busy) return;
        busy = true;
        try {
          if (await check.holds()) {
            w.close();
            clearInterval(t);
            resolve();
          }
        } catch {
          // a file read mid-replacement: the next change tries again
        } finally {
          busy = false;
        }
      };
      const w = watch(check.dir, () => void test());
      const t = setInterval(() => void test(), 5); // a change fs.watch coalesced
      void ended.then(() => (w.close(), clearInterval(t)));
    } else {
      resolve();
    }
    void ended.then(() => resolve());
  });
  const bound = setTimeout(() => child.kill('SIGKILL'), 120_000);
  await reached;
  if (at.afterMs) await new Promise((r) => setTimeout(r, at.afterMs));
  const killed = !finished && child.exitCode === null && child.signalCode === null && child.kill('SIGKILL');
  const r = await ended;
  clearTimeout(bound);
  if (!killed && !finished) throw new Error(`${args.join(' ')} (${at.label}): neither finished nor killed`);
  return { ...r, killed };
}

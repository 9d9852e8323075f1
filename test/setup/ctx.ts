import fs from 'node:fs/promises';
import { parseConfig } from '@dbkit/core/config';
import { zxExec } from '@dbkit/core/exec';
import { createLog, type Sink } from '@dbkit/core/output';
import type { Ctx } from '@dbkit/core/context';
import { ROOT } from './project.ts';

/** What a test's log printed, split by stream. */
export interface Captured extends Sink {
  stdout: string;
  stderr: string;
}

export function capture(tty = false): Captured {
  const c: Captured = {
    stdout: '',
    stderr: '',
    tty,
    color: false,
    out: (s) => void (c.stdout += s),
    err: (s) => void (c.stderr += s),
  };
  return c;
}

/** A real context (real processes, real files) over the given settings, with captured output. */
export function testCtx(env: Record<string, string | undefined>, over: Partial<Ctx> = {}): Ctx & { sink: Captured } {
  const sink = capture();
  const cfg = parseConfig(ROOT, { ...env });
  return {
    cfg,
    exec: zxExec({ ...process.env, ...env }),
    fs,
    log: createLog(sink),
    ask: async () => false,
    confirm: async () => {
      throw new Error('ctx.confirm outside the entry point: call the task through runTask (tasks/cli.ts)');
    },
    interactive: false,
    clock: () => new Date(),
    sink,
    ...over,
  };
}

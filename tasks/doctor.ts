import { selectRuntime } from '@dbkit/core/runtime/select';
import { doctor } from '@dbkit/core/doctor';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:doctor',
  summary: 'Check every security promise against the files and the running server; non-zero on any failure.',
  flags: { json: { type: 'boolean', description: 'print the checks as JSON' } },
  async run(ctx) {
    const rt = await selectRuntime(ctx);
    const checks = await doctor(ctx, rt);
    const w = Math.max(...checks.map((c) => c.name.length));
    const mark = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' } as const;
    const text = checks
      .map(
        (c) =>
          `${mark[c.status]}  ${c.name.padEnd(w)}  ${c.detail}${c.fix && c.status !== 'ok' ? `\n      ${''.padEnd(w)}  fix: ${c.fix}` : ''}`,
      )
      .join('\n');
    const failed = checks.filter((c) => c.status === 'fail').length;
    ctx.log.result(`${text}\n${failed ? `${failed} check(s) failed` : 'all checks passed'} (${rt.label})`, {
      runtime: rt.label,
      ok: failed === 0,
      checks,
    });
    return failed ? 1 : 0;
  },
};

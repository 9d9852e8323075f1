import { selectRuntime } from '@dbkit/core/runtime/select';
import { loadMigrations } from '@dbkit/core/migrations/files';
import { dirtyReport } from '@dbkit/core/migrations/diagnose';
import { status } from '@dbkit/core/migrations/runner';
import { withClient } from '@dbkit/core/pg';
import { overview, overviewLines } from '@dbkit/core/overview';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:status',
  summary: 'Server, environment, size, connections, last backup, certificate; migration version, dirty flag, applied and pending files.',
  flags: {
    json: { type: 'boolean', description: 'print the status as JSON' },
    'exit-code': { type: 'boolean', description: 'exit 1 while anything is pending or never applied, or the database is dirty' },
  },
  async run(ctx, { flags }) {
    const migrations = loadMigrations(ctx.cfg.migrationsDir);
    const rt = await selectRuntime(ctx);
    const o = await overview(ctx, rt);
    if (!o.server.up) {
      // The overview alone; --exit-code fails, since nothing can be known to be applied.
      ctx.log.result(overviewLines(o, ctx.clock()).join('\n'), { runtime: o.runtime, overview: o });
      return flags['exit-code'] ? 1 : 0;
    }
    const [s, dirty] = await withClient(await rt.target('migrator'), async (c) => {
      const st = await status(c, migrations);
      return [st, st.dirty ? await dirtyReport(c, migrations, ctx.cfg) : undefined] as const;
    });
    const lines = [
      ...overviewLines(o, ctx.clock()),
      `version   ${s.version ?? 'none'}${s.dirty ? ' (DIRTY)' : ''}`,
      // golang-migrate (docker) says only "Dirty database version N": the diagnosis and the way out are here.
      ...(dirty ? [`dirty     ${dirty.problem}`, `fix       ${dirty.fix}`] : []),
      `applied   ${s.applied.length}`,
      `pending   ${s.pending.length}`,
      ...s.applied.map((e) =>
        [
          `  applied ${e.file}`,
          e.appliedAt,
          e.edited && 'EDITED after it was applied',
          e.unrecorded && 'NEVER APPLIED',
          e.dirty && 'DIRTY: stopped part-way',
        ]
          .filter(Boolean)
          .join('  '),
      ),
      ...s.pending.map((e) => `  pending ${e.file}`),
    ];
    for (const e of s.applied.filter((x) => x.edited))
      ctx.log.warn(`${e.file} was edited after it was applied; the database ran the old text`);
    for (const e of s.applied.filter((x) => x.unrecorded)) {
      ctx.log.warn(
        `${e.file} is below the current version ${s.version} but was never applied (added after later migrations ran?); no runner will apply it: give it a version above ${s.version}`,
      );
    }
    ctx.log.result(lines.join('\n'), { runtime: rt.label, ...s, ...(dirty && { problem: dirty.problem, fix: dirty.fix }), overview: o });
    return flags['exit-code'] && (s.pending.length || s.dirty || s.applied.some((e) => e.unrecorded)) ? 1 : 0;
  },
};

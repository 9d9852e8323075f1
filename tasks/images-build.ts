import { buildImages } from '@dbkit/core/images';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'images:build',
  summary: 'Build the local stand-ins for the official images (no registry needed); cached by their inputs.',
  flags: {
    'print-env': { type: 'boolean', description: 'print only DB_IMAGE=, MIGRATE_IMAGE= and NODE_IMAGE= lines on stdout' },
    force: { type: 'boolean', description: 'rebuild even when the inputs are unchanged' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  async run(ctx, { flags }) {
    const t0 = ctx.clock().getTime();
    const r = await buildImages(ctx, { force: Boolean(flags.force) });
    const env = `DB_IMAGE=${r.images.db}\nMIGRATE_IMAGE=${r.images.migrate}\nNODE_IMAGE=${r.images.node}`;
    if (flags['print-env']) return ctx.log.result(env);
    const s = ((ctx.clock().getTime() - t0) / 1000).toFixed(1);
    ctx.log.result(`${r.built.length ? `built ${r.built.join(', ')}` : 'all images up to date'} in ${s} s; to use them:\n${env}`, {
      ...r,
      seconds: Number(s),
    });
  },
};

import path from 'node:path';
import type { Ctx } from '../context.ts';

/** Bytes in the regular files under `dir`, at any depth: what a dump has written so far, whatever its format. */
export async function treeBytes(ctx: Pick<Ctx, 'fs'>, dir: string): Promise<number> {
  let total = 0;
  // The dump is being written: an entry may come or go between the listing and the stat.
  for (const e of await ctx.fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await treeBytes(ctx, p);
    else if (e.isFile()) total += (await ctx.fs.stat(p).catch(() => undefined))?.size ?? 0; // gone since the listing
  }
  return total;
}

/** On a terminal, shows the time and (`written`) the bytes written while `work` runs; piped, nothing is measured. */
export async function whileRunning<T>(ctx: Pick<Ctx, 'log'>, label: string, work: Promise<T>, written?: () => Promise<number>): Promise<T> {
  const bar = ctx.log.spinner(label);
  const t0 = performance.now();
  let polling = false;
  const tick = async () => {
    if (polling) return; // a slow disk: never two measurements at once
    polling = true;
    try {
      const secs = `${((performance.now() - t0) / 1000).toFixed(0)} s`;
      bar.update(0, 0, written ? `${((await written()) / 1e6).toFixed(1)} MB written, ${secs}` : secs);
    } finally {
      polling = false;
    }
  };
  const timer = bar.shown ? setInterval(() => void tick().catch(() => {}), 250) : undefined; // a tick that fails is skipped
  try {
    return await work;
  } finally {
    clearInterval(timer);
    bar.end();
  }
}

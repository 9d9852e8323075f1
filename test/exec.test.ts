import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { zxExec } from '@dbkit/core/exec';

// zx starts every command as `bash -c` with a socket for stdin; bash then reads ~/.bashrc unless
// SHLVL says another shell is above it. A .bashrc that leaves a mark tells whether it was read.
interface Ctx {
  home: string;
}
const exec = suite<Ctx>('exec: the bash that zx starts', { home: '' });

exec.before.each(async (ctx) => {
  ctx.home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-exec-'));
  await fs.writeFile(path.join(ctx.home, '.bashrc'), `touch "${ctx.home}/bashrc-was-read"\n`);
});
exec.after.each(async (ctx) => {
  await fs.rm(ctx.home, { recursive: true, force: true });
});

for (const shlvl of [undefined, '', '0', '1', '3']) {
  exec(`never reads ~/.bashrc, with SHLVL ${shlvl === undefined ? 'unset (turbo)' : `"${shlvl}"`}`, async (ctx) => {
    const base = { PATH: process.env.PATH, HOME: ctx.home, ...(shlvl === undefined ? {} : { SHLVL: shlvl }) };
    const r = await zxExec(base)('printenv', ['SHLVL']);
    assert.is(r.code, 0, r.stderr);
    assert.not.ok(existsSync(path.join(ctx.home, 'bashrc-was-read')), `bash read ~/.bashrc (its SHLVL: ${r.stdout.trim()})`);
  });
}

exec("passes a command's arguments as data, and its environment", async (ctx) => {
  const r = await zxExec({ PATH: process.env.PATH, HOME: ctx.home })('sh', ['-c', 'printf "%s|" "$1" "$GREETING"', 'sh', "a b; 'c' $(x)"], {
    env: { GREETING: 'hi' },
  });
  assert.is(r.stdout, "a b; 'c' $(x)|hi|");
});

exec('a command past its timeoutMs ends with a non-zero code instead of hanging, and leaves no process behind', async (ctx) => {
  const seconds = (30 + Math.random()).toFixed(6); // an argument no other process has
  const call = zxExec({ PATH: process.env.PATH, HOME: ctx.home })('sleep', [seconds], { timeoutMs: 300, nothrow: true });
  // A liveness bound, not a speed check: before the fix the call never returned at all.
  const hung = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 20_000).unref());
  const r = await Promise.race([call, hung]);
  assert.ok(r !== 'hung', 'exec did not return after its timeout');
  assert.is.not((r as { code: number }).code, 0);
  await new Promise((resolve) => setTimeout(resolve, 1500)); // the watcher's TERM-then-KILL second
  const left = (await fs.readdir('/proc')).filter((d) => /^\d+$/.test(d));
  for (const pid of left) {
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    assert.not.ok(cmd.includes(seconds), `left behind: ${cmd.replace(/\0/g, ' ')}`);
  }
});

exec.run();

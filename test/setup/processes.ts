import fs from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { ROOT } from './project.ts';

/** Every process's command line, right now (processes may vanish while we read: that is fine). */
export async function cmdlines(): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const line = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (line) out.push(line.replace(/\0/g, ' '));
  }
  return out;
}

export interface Watched {
  code: number;
  output: string;
  /** Every command line seen holding a secret. */
  hits: string[];
  samples: number;
  /** Every distinct command line seen while the command ran. */
  seen: Set<string>;
}

/**
 * Runs a command while sampling every process's argv until it exits; returns output and any argv
 * with a secret. `pauseMs` rests between samples (none by default: every sample as soon as the last).
 */
export async function watch(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  secrets: string[],
  opts: { pauseMs?: number } = {},
): Promise<Watched> {
  const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, CI: 'true', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const done = new Promise<number>((r) => child.on('close', (code) => r(code ?? 1)));
  let running = true;
  void done.then(() => (running = false));
  const hits: string[] = [];
  const seen = new Set<string>();
  let samples = 0;
  while (running) {
    for (const l of await cmdlines()) {
      seen.add(l);
      if (secrets.some((s) => l.includes(s))) hits.push(l);
    }
    samples++;
    if (opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
  }
  return { code: await done, output, hits, samples, seen };
}

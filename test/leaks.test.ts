import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { makeProject, removeProject, ok, readSecretFile, ROOT, type Project } from './setup/project.ts';

interface C {
  p: Project;
  secrets: string[];
}

const leaks = suite<C>('no secret in any process argument, output or server log');

leaks.before(async (c) => {
  c.p = await makeProject();
  await ok(['db:secrets'], c.p.env); // made first so the watcher knows what to look for
  c.secrets = [];
  for (const n of ['postgres_password', 'migrate_password', 'app_password']) {
    const v = await readSecretFile(c.p, n);
    c.secrets.push(v, encodeURIComponent(v));
  }
});
leaks.after(async (c) => removeProject(c.p));

/** Every process's command line, right now (processes may vanish while we read: that is fine). */
async function cmdlines(): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const line = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (line) out.push(line.replace(/\0/g, ' '));
  }
  return out;
}

/** Runs a command while sampling every process's argv until it exits; returns output and any argv with a secret. */
async function watch(cmd: string, args: string[], env: Record<string, string>, secrets: string[]) {
  const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, CI: 'true', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const done = new Promise<number>((r) => child.on('close', (code) => r(code ?? 1)));
  let running = true;
  void done.then(() => (running = false));
  const hits: string[] = [];
  let samples = 0;
  while (running) {
    for (const l of await cmdlines()) if (secrets.some((s) => l.includes(s))) hits.push(l);
    samples++;
  }
  return { code: await done, output, hits, samples };
}

leaks('deploy, then migrations down and up: no argv ever holds a password, nor does any output', async (c) => {
  const runs = [
    await watch('pnpm', ['run', 'deploy'], c.p.env, c.secrets),
    await watch(process.execPath, ['dist/cli.js', 'db:migrate', 'down', '1'], c.p.env, c.secrets),
    await watch(process.execPath, ['dist/cli.js', 'db:migrate'], c.p.env, c.secrets),
    await watch(process.execPath, ['dist/cli.js', 'db:secrets:rotate', '--all'], c.p.env, c.secrets),
  ];
  for (const r of runs) {
    assert.is(r.code, 0, r.output);
    assert.ok(r.samples > 3, 'the watcher sampled while the task ran');
    assert.equal(r.hits, []);
    for (const s of c.secrets) assert.not.ok(r.output.includes(s));
  }
});

leaks('the server log holds no password', async (c) => {
  const log = await fs.readFile(path.join(c.p.nativeDir, 'postgres.log'), 'utf8');
  assert.match(log, /connection authorized/); // the log is real and was written
  for (const s of c.secrets) assert.not.ok(log.includes(s));
});

leaks.run();

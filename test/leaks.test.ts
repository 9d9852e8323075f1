import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { makeProject, removeProject, ok, readSecretFile, type Project } from './setup/project.ts';
import { watch } from './setup/processes.ts';

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

leaks('deploy, then migrations down and up: no argv ever holds a password, nor does any output', async (c) => {
  const runs = [
    await watch('pnpm', ['run', 'deploy'], c.p.env, c.secrets),
    await watch(process.execPath, ['dist/cli.js', 'db:migrate', '--yes', 'down', '1'], c.p.env, c.secrets),
    await watch(process.execPath, ['dist/cli.js', 'db:migrate'], c.p.env, c.secrets),
    await watch(process.execPath, ['dist/cli.js', 'db:secrets:rotate', '--all'], c.p.env, c.secrets),
  ];
  for (const r of runs) {
    assert.is(r.code, 0, r.output);
    // Seen running, not merely sampled often: a count of samples fails on a loaded machine.
    assert.ok(
      [...r.seen].some((l) => l.includes('dist/cli.js db:')),
      'the watcher saw the task while it ran',
    );
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

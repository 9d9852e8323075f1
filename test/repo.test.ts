import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ROOT, run } from './setup/project.ts';

const repo = suite('the repository keeps its rules');

repo('secrets, keys, local state and local env files are git-ignored; the folder READMEs are not', async () => {
  const ignored = [
    'database/infra/secrets/postgres_password',
    'database/infra/secrets/app_password',
    'database/infra/ssl/server.key',
    'database/infra/ssl/ca.key',
    '.data/data/PG_VERSION',
    'backups/x.dump',
    '.env.local',
    '.env.production.local',
    'dist/cli.js',
  ];
  for (const f of ignored) assert.is((await run('git', ['check-ignore', '-q', f], {})).code, 0, `${f} must be ignored`);
  for (const f of ['database/infra/secrets/README.md', 'database/infra/ssl/README.md', '.env']) {
    assert.is((await run('git', ['check-ignore', '-q', f], {})).code, 1, `${f} must not be ignored`);
  }
});

repo('no tracked file is a secret or a key', async () => {
  const files = (await run('git', ['ls-files'], {})).stdout.split('\n');
  assert.equal(
    files.filter((f) => /^database\/infra\/(secrets|ssl)\/(?!README\.md$)|\.key$|\.pem$/.test(f)),
    [],
  );
});

repo('every side-effect turbo task is uncached, and deploy chains migrate, up, secure', async () => {
  const t = JSON.parse(await fs.readFile(path.join(ROOT, 'turbo.json'), 'utf8')).tasks;
  for (const k of ['secure', 'up', 'migrate', 'seed', 'deploy']) assert.is(t[k].cache, false, k);
  assert.equal(t.deploy.dependsOn, ['migrate']);
  assert.equal(t.migrate.dependsOn, ['up']);
  assert.equal(t.up.dependsOn, ['secure']);
});

repo('no task imports another task, and nothing below the entry point reads process.env', async () => {
  const shared = new Set(['task.ts', 'help.ts', 'registry.ts', 'cli.ts']);
  for (const f of await fs.readdir(path.join(ROOT, 'tasks'))) {
    if (shared.has(f) || !f.endsWith('.ts')) continue;
    const src = await fs.readFile(path.join(ROOT, 'tasks', f), 'utf8');
    const local = [...src.matchAll(/from '\.\/([^']+)'/g)].map((m) => m[1]).filter((m) => m !== 'task.ts');
    assert.equal(local, [], `${f} imports ${local.join(', ')}`);
  }
  const core = path.join(ROOT, 'packages/core/src');
  const walk = async (d: string): Promise<string[]> =>
    (
      await Promise.all(
        (await fs.readdir(d, { withFileTypes: true })).map((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)])),
      )
    ).flat();
  for (const f of await walk(core)) {
    assert.not.match(await fs.readFile(f, 'utf8'), /process\.env/, path.relative(ROOT, f));
  }
});

repo("the code is in the formatter's style, and pnpm lint checks it", async () => {
  const r = await run(path.join(ROOT, 'node_modules/.bin/prettier'), ['--check', '**/*.{ts,mjs}'], {});
  assert.is(r.code, 0, r.stdout + r.stderr);
  const pkg = JSON.parse(await fs.readFile(path.join(ROOT, 'package.json'), 'utf8'));
  assert.match(pkg.scripts.lint, /prettier --check/);
});

repo.run();

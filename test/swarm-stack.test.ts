import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { engineSuite } from './setup/docker.ts';
import { cli, ROOT, run } from './setup/project.ts';
import { composeModel } from '@dbkit/core/runtime/swarm-stack';
import { builtImage } from '@dbkit/core/runtime/swarm-image';
import { zxExec } from '@dbkit/core/exec';
import type { Ctx } from '@dbkit/core/context';

// infra/docker-stack.yml is generated from infra/docker-compose.yml: this file regenerates it and
// fails when the committed one differs, so the two can never drift. Compose normalises the file,
// so the check needs the docker CLI with Compose v2 (no engine state is touched).

const s = engineSuite('infra/docker-stack.yml is what infra/docker-compose.yml gives');
if (s) {
  s('pnpm stack:generate --check passes on the committed files', async () => {
    const r = await cli(['stack:generate', '--check'], {});
    assert.is(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /up to date/);
  });

  s('a change to the compose file is a failing check with a hint, and the generator writes it through', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-stack-'));
    try {
      // A copy of the repository's infra/ and database/infra/ (the paths in the compose file are relative).
      for (const d of ['infra', 'database/infra/config', 'database/infra/scripts', 'packages/api']) {
        await fs.cp(path.join(ROOT, d), path.join(dir, d), { recursive: true });
      }
      const composeFile = path.join(dir, 'infra/docker-compose.yml');
      const text = await fs.readFile(composeFile, 'utf8');
      await fs.writeFile(composeFile, text.replace('stop_grace_period: 30s', 'stop_grace_period: 45s'));
      // The CLI's root is the checkout; the copy is addressed by running the built CLI from it.
      await fs.symlink(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
      await fs.cp(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
      await fs.copyFile(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
      await fs.copyFile(path.join(ROOT, '.env'), path.join(dir, '.env'));
      const check = await run(process.execPath, [path.join(dir, 'dist/cli.js'), 'stack:generate', '--check'], {}, { cwd: dir });
      assert.is(check.code, 1, check.stdout + check.stderr);
      assert.match(check.stderr, /error: infra\/docker-stack\.yml is not what infra\/docker-compose\.yml gives/);
      assert.match(check.stderr, /hint: regenerate it: pnpm stack:generate/);
      const gen = await run(process.execPath, [path.join(dir, 'dist/cli.js'), 'stack:generate'], {}, { cwd: dir });
      assert.is(gen.code, 0, gen.stderr);
      const stack = await fs.readFile(path.join(dir, 'infra/docker-stack.yml'), 'utf8');
      assert.match(stack, /stop_grace_period: "45s"/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  s('the stack has none of what docker stack deploy ignores or rejects, and keeps the variables', async () => {
    const stack = await fs.readFile(path.join(ROOT, 'infra/docker-stack.yml'), 'utf8');
    for (const gone of [
      /^\s+build:/m,
      /^\s+restart:/m,
      /^\s+depends_on:/m,
      /^\s+profiles:/m,
      /^\s+container_name:/m,
      /host_ip/,
      /shm_size/,
      /file:/,
    ])
      assert.not.match(stack, gone);
    assert.match(stack, /image: "\$\{DB_IMAGE:-postgres:16-alpine\}"/);
    assert.match(stack, /published: "\$\{ENV_DB_PORT:-5432\}"/);
    assert.match(stack, /mode: "replicated-job"/);
    assert.match(stack, /node\.labels\.pg-deploy\.\$\{PGDEPLOY_STACK/);
    // Swarm validates it: the CLI loads it (every variable set) without an engine call.
    const cfg = await run('docker', ['stack', 'config', '-c', 'infra/docker-stack.yml'], varsFor(stack));
    assert.is(cfg.code, 0, cfg.stderr);
    assert.match(cfg.stdout, /tmpfs/);
  });

  s('api-db holds no app_password, and the api publishes its port through api-publish, which holds no secret', async () => {
    const stack = await fs.readFile(path.join(ROOT, 'infra/docker-stack.yml'), 'utf8');
    const cfg = await run('docker', ['stack', 'config', '-c', 'infra/docker-stack.yml'], varsFor(stack));
    assert.is(cfg.code, 0, cfg.stderr);
    const block = (name: string) => new RegExp(`^  ${name}:\\n((?:    .*\\n|\\n)*)`, 'm').exec(cfg.stdout)?.[1] ?? '';
    assert.ok(block('api-db'), cfg.stdout);
    assert.not.match(block('api-db'), /app_password/);
    assert.match(block('api-db'), /app_user/);
    assert.match(block('api'), /app_password/);
    assert.not.match(block('api'), /published/);
    assert.match(block('api'), /order: start-first/);
    assert.match(block('api-publish'), /published: "?8080/);
    assert.match(block('api-publish'), /mode: host/);
    assert.not.match(block('api-publish'), /secrets:/);
  });

  s('the standby is a file of its own: the main stack names no replication secret, the standby file loads with its tmpfs', async () => {
    const stack = await fs.readFile(path.join(ROOT, 'infra/docker-stack.yml'), 'utf8');
    assert.not.match(stack, /replication_|api-db-replica|pg_replica_data/);
    const standby = await fs.readFile(path.join(ROOT, 'infra/docker-stack.replica.yml'), 'utf8');
    const cfg = await run('docker', ['stack', 'config', '-c', 'infra/docker-stack.replica.yml'], varsFor(standby));
    assert.is(cfg.code, 0, cfg.stderr);
    assert.equal([...cfg.stdout.matchAll(/^  ([a-z-]+):\n/gm)].map((m) => m[1])[0], 'api-db-replica');
    assert.match(cfg.stdout, /target: \/run\/pgdeploy/);
    assert.match(cfg.stdout, /replication_password/);
    assert.match(cfg.stdout, /published: "?\d+/);
    assert.match(standby, /node\.labels\.pg-deploy\.\$\{PGDEPLOY_STACK/);
  });

  s("the api's image tag is the hash of its build inputs: the same files give the same tag, a changed file another", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-image-'));
    try {
      for (const d of ['infra', 'database/infra/config', 'database/infra/scripts', 'packages/api'])
        await fs.cp(path.join(ROOT, d), path.join(dir, d), { recursive: true });
      const ctx = {
        exec: zxExec({ ...process.env }),
        fs,
        cfg: { root: dir, composeFile: path.join(dir, 'infra/docker-compose.yml') },
      } as unknown as Ctx;
      const tag = async () => {
        const { model } = await composeModel(ctx);
        return (await builtImage(ctx, model, 'demo', 'api'))?.tag;
      };
      const first = await tag();
      assert.match(first!, /^demo-api:[0-9a-f]{12}$/);
      assert.is(await tag(), first);
      await fs.appendFile(path.join(dir, 'packages/api/dist/server.mjs'), '\n// changed\n');
      const changed = await tag();
      assert.match(changed!, /^demo-api:[0-9a-f]{12}$/);
      assert.is.not(changed, first);
      // A service Compose does not build has no such image.
      const { model } = await composeModel(ctx);
      assert.is(await builtImage(ctx, model, 'demo', 'api-db'), undefined);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  s.run();
}

/** A value for every ${PGDEPLOY_*} the stack requires, so that `docker stack config` can load it. */
function varsFor(stack: string): Record<string, string> {
  return Object.fromEntries([...stack.matchAll(/\$\{(PGDEPLOY_[A-Z0-9_]+):\?/g)].map((m) => [m[1], 'x']));
}

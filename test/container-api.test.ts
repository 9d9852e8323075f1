import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, makeProject, ok, otherCa, readSecretFile, removeProject, startProject, ROOT, type Project } from './setup/project.ts';
import { setUp } from './setup/hooks.ts';

// The compose `api` service's program (packages/api/server.mjs), run here as its container would
// run it, against a native PostgreSQL 16 started for the test. No image is built: no engine runs here.

const SERVER = path.join(ROOT, 'packages/api/server.mjs');

interface Api {
  child: ChildProcess;
  port: number;
  stdout: string;
  stderr: string;
  exited: Promise<number>;
}

/** Starts server.mjs as the container would, the project's server standing in for api-db. */
async function startApi(p: Project, env: { [k: string]: string } = {}): Promise<Api> {
  const port = await freePort();
  const child = spawn(process.execPath, [SERVER], {
    env: {
      PATH: process.env.PATH,
      SECRETS_DIR: p.secretsDir,
      DB_HOST: 'localhost',
      DB_PORT: String(p.port),
      DB_CA_FILE: path.join(p.sslDir, 'ca.crt'),
      PORT: String(port),
      LISTEN_HOST: '127.0.0.1',
      // The image's unprivileged user is `node`; here the server drops to `postgres`.
      APP_USER: 'postgres',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const api: Api = {
    child,
    port,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1))),
  };
  child.stdout!.on('data', (d) => (api.stdout += d));
  child.stderr!.on('data', (d) => (api.stderr += d));
  const listening = new Promise<void>((resolve) => child.stdout!.on('data', () => api.stdout.includes('listening') && resolve()));
  await Promise.race([listening, api.exited]);
  return api;
}

async function stopApi(api: Api | undefined) {
  if (api && api.child.exitCode === null) {
    api.child.kill('SIGTERM');
    await api.exited;
  }
}

const health = async (api: Api, route = '/health') => {
  const r = await fetch(`http://127.0.0.1:${api.port}${route}`);
  return { status: r.status, body: (await r.json()) as { status?: string; tls?: boolean; error?: string } };
};

// ---------------------------------------------------------------------------------------------
const service = suite<{ p?: Project; api?: Api }>('the example api service (packages/api/server.mjs) against a real server');

setUp(service, async (ctx) => {
  ctx.p = await makeProject();
  await startProject(ctx.p);
  ctx.api = await startApi(ctx.p);
  assert.is(ctx.api.child.exitCode, null, ctx.api.stderr);
});

service.after(async (ctx) => {
  await stopApi(ctx.api);
  await removeProject(ctx.p);
});

service('answers /health with 200 after a verified TLS login as the application role', async ({ api }) => {
  assert.equal(await health(api!), { status: 200, body: { status: 'ok', tls: true } });
});

service('runs as the unprivileged user once it has read the secrets', async ({ api }) => {
  const status = await fs.readFile(`/proc/${api!.child.pid}/status`, 'utf8');
  const uid = Number(/^Uid:\s+(\d+)\s+(\d+)/m.exec(status)![2]);
  assert.is(uid, Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim()));
});

service('keeps the password out of its argv and its environment', async ({ p, api }) => {
  const password = await readSecretFile(p!, 'app_password');
  for (const f of ['cmdline', 'environ']) {
    assert.not.ok((await fs.readFile(`/proc/${api!.child.pid}/${f}`)).includes(password), f);
  }
  assert.not.ok((api!.stdout + api!.stderr).includes(password));
});

service('answers other paths with 404', async ({ api }) => {
  assert.is((await health(api!, '/')).status, 404);
});

service("answers 503 when the server's certificate is not signed by its CA, without the password", async ({ p }) => {
  const ca = await otherCa(path.join(p!.dir, 'other-ca'));
  const api = await startApi(p!, { DB_CA_FILE: ca });
  try {
    const r = await health(api);
    assert.is(r.status, 503);
    assert.match(r.body.error!, /certificate/);
    assert.not.ok(r.body.error!.includes(await readSecretFile(p!, 'app_password')));
  } finally {
    await stopApi(api);
  }
});

service('answers 503 once the database is down', async ({ p, api }) => {
  await ok(['db:down'], p!.env);
  assert.is((await health(api!)).status, 503);
});

service('stops at once on SIGTERM, as `docker compose stop` sends it', async ({ api }) => {
  api!.child.kill('SIGTERM');
  // 0, not death by the signal: the handler closed the server and exited by itself.
  assert.is(await api!.exited, 0);
});

service.run();

// ---------------------------------------------------------------------------------------------
const refuse = suite<{ p?: Project }>('the example api service refuses to start without its secrets');

setUp(refuse, async (ctx) => {
  ctx.p = await makeProject();
});

refuse.after(async (ctx) => {
  await removeProject(ctx.p);
});

refuse('a missing secret stops it with one line naming the file and the fix', async ({ p }) => {
  await fs.mkdir(p!.secretsDir, { recursive: true });
  const api = await startApi(p!);
  assert.is(await api.exited, 1);
  const lines = api.stderr.trim().split('\n');
  assert.is(lines.length, 1, api.stderr);
  assert.match(lines[0], /app_user is missing or empty/);
  assert.match(lines[0], /pnpm db:secrets/);
});

refuse.run();

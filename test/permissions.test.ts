import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cli, makeProject, ok, removeProject, type Project } from './setup/project.ts';
import { failsClearly } from './setup/assert.ts';
import { setUp } from './setup/hooks.ts';

// One check of the modes (packages/core/src/preflight.ts permissionProblems), made by db:up before
// it starts anything and by db:doctor: they can no longer disagree.

interface Ctx {
  p?: Project;
}

const perms = suite<Ctx>('db:up and db:doctor refuse the same loose modes, naming the file and the chmod');

setUp(perms, async (ctx) => {
  ctx.p = await makeProject();
  await ok(['db:secrets'], ctx.p.env);
  await ok(['db:secure'], ctx.p.env);
});

perms.after(async (ctx) => {
  await removeProject(ctx.p);
});

const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

/** db:up fails with one error line and one hint line matching these, and starts nothing; db:doctor fails the same check. */
async function bothRefuse(p: Project, error: RegExp, hint: RegExp): Promise<void> {
  failsClearly(await cli(['db:up'], p.env), error, { hint });
  assert.not.ok(await exists(path.join(p.nativeDir, 'data')), 'no cluster was made, nothing started');
  const doc = await cli(['db:doctor', '--json'], p.env);
  assert.is(doc.code, 1);
  const check = JSON.parse(doc.stdout).checks.find((c: { name: string }) => c.name === 'file permissions');
  assert.ok(check, `db:doctor has a file permissions check:\n${doc.stdout}`);
  assert.is(check.status, 'fail');
  assert.match(check.detail, error);
  assert.match(check.fix, hint);
}

perms('a 0755 secrets folder stops db:up and fails db:doctor, with chmod 700', async ({ p }) => {
  await fs.chmod(p!.secretsDir, 0o755);
  try {
    await bothRefuse(p!, new RegExp(`${p!.secretsDir} is open to others \\(mode 755\\)`), new RegExp(`chmod 700 ${p!.secretsDir}`));
  } finally {
    await fs.chmod(p!.secretsDir, 0o700);
  }
});

perms('a 0640 ca.key stops db:up and fails db:doctor, with chmod 600', async ({ p }) => {
  const key = path.join(p!.sslDir, 'ca.key');
  await fs.chmod(key, 0o640);
  try {
    await bothRefuse(p!, new RegExp(`${key} is readable by others \\(mode 640\\)`), new RegExp(`chmod 600 ${key}`));
  } finally {
    await fs.chmod(key, 0o600);
  }
});

perms('with the modes right, db:up starts and db:doctor passes the check', async ({ p }) => {
  await ok(['db:up'], p!.env);
  const doc = await cli(['db:doctor', '--json'], p!.env);
  const check = JSON.parse(doc.stdout).checks.find((c: { name: string }) => c.name === 'file permissions');
  assert.is(check?.status, 'ok', doc.stdout);
});

perms.run();

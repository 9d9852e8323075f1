import fs from 'node:fs/promises';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { readSecretFile, ROOT, type Project } from './project.ts';

/** The recording stand-in for `docker` and `docker-compose`: run as `node ENGINE_STUB docker|docker-compose ARGS...`. */
export const ENGINE_STUB = path.join(ROOT, 'test/setup/engine-stub.mjs');

/** One call the stub recorded in $DOCKER_STUB_LOG. */
export interface Call {
  /** docker or docker-compose */
  prog: string;
  argv: string[];
  env: Record<string, string>;
  /** What it read on stdin (only db-admin-sql's SQL is read). */
  stdin: string;
}

/** The calls recorded in `log`, in the order they reached the stub. */
export async function readCalls(log: string): Promise<Call[]> {
  return (await fs.readFile(log, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Call);
}

/** No password of the project in any call's arguments, environment or stdin. */
export async function assertNoSecrets(p: Project, calls: Call[]): Promise<void> {
  for (const n of ['postgres_password', 'migrate_password', 'app_password']) {
    const pw = await readSecretFile(p, n);
    for (const c of calls) {
      assert.not.ok(
        c.argv.some((a) => a.includes(pw)),
        `${n} in docker's argv`,
      );
      assert.not.ok(
        Object.values(c.env).some((v) => v.includes(pw)),
        `${n} in docker's environment`,
      );
      assert.not.ok(c.stdin.includes(pw), `${n} on docker's stdin`);
    }
  }
}

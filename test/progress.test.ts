import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLog } from '@dbkit/core/output';
import { treeBytes, whileRunning } from '@dbkit/core/backup/progress';
import { capture } from './setup/ctx.ts';

// What db:backup and db:restore show while pg_dump or pg_restore runs.
const progress = suite('progress of a long dump or restore');

const after = <T>(ms: number, value: T) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

progress('on a terminal: the bytes written so far and the time, then the line is cleared', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-progress-'));
  try {
    await fs.mkdir(path.join(dir, 'db.dir'));
    await fs.writeFile(path.join(dir, 'db.dir', '3001.dat.gz'), Buffer.alloc(1_500_000));
    await fs.writeFile(path.join(dir, 'roles.sql'), Buffer.alloc(500_000));
    assert.is(await treeBytes({ fs }, dir), 2_000_000);
    const sink = capture(true);
    const got = await whileRunning({ log: createLog(sink) }, 'dumping app', after(700, 'done'), () => treeBytes({ fs }, dir));
    assert.is(got, 'done');
    assert.match(sink.stderr, /dumping app 2\.0 MB written, 0 s/);
    assert.ok(sink.stderr.endsWith('\r\x1b[2K'), 'the spinner line is cleared at the end');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

progress('piped: nothing per tick, and nothing measured, so the output stays one line per step', async () => {
  const sink = capture(false);
  let measured = 0;
  await whileRunning({ log: createLog(sink) }, 'dumping app', after(600, undefined), async () => ++measured);
  assert.is(sink.stderr, '');
  assert.is(measured, 0);
});

progress('a failing run still ends the spinner and passes its error on', async () => {
  const sink = capture(true);
  const err = await whileRunning(
    { log: createLog(sink) },
    'restoring app',
    after(300, 0).then(() => Promise.reject(new Error('pg_restore failed'))),
  ).catch((e: Error) => e);
  assert.instance(err, Error);
  assert.is((err as Error).message, 'pg_restore failed');
  assert.match(sink.stderr, /restoring app 0 s/);
  assert.ok(sink.stderr.endsWith('\r\x1b[2K'));
});

progress.run();

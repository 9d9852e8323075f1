import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { recoveryStateFile, repairInterruptedRecovery } from '@dbkit/core/backup/pitr';
import type { Runtime } from '@dbkit/core/runtime/runtime';
import { testCtx } from './setup/ctx.ts';

// An interrupted db:restore --to-time leaves a state file in DB_BACKUP_DIR. Compose and Swarm are both
// the docker runtime and may share that folder: each acts only on a state file it wrote itself.

/** A runtime that records whether the repair reached its data (the repair's first step asks for the swap). */
function recordingRuntime(label: 'docker' | 'native', reached: string[]): Runtime {
  return {
    label,
    pitr: {
      swap: () => {
        reached.push('swap');
        return { logHint: 'see: pnpm db:logs' };
      },
    },
  } as unknown as Runtime;
}

test("a killed Swarm restore's state is left alone by Compose's db:up, and taken up by Swarm's", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgdeploy-pitr-place-'));
  try {
    const dead = spawnSync('true').pid!; // ended: its state file is an interrupted run's
    const compose = testCtx({ DB_BACKUP_DIR: dir, DB_TARGET: 'compose' });
    const swarm = testCtx({ DB_BACKUP_DIR: dir, DB_TARGET: 'swarm' });
    const state = {
      pid: dead,
      place: 'docker/swarm',
      step: 'set-aside',
      hadData: true,
      base: 'b',
      target: 't',
      at: new Date().toISOString(),
    };
    await fs.writeFile(recoveryStateFile(swarm), JSON.stringify(state));
    const reached: string[] = [];
    const said: string[] = [];
    await repairInterruptedRecovery(compose, recordingRuntime('docker', reached), (l) => said.push(l));
    assert.equal([reached, said], [[], []], 'Compose touched nothing of the Swarm restore');
    await repairInterruptedRecovery(swarm, recordingRuntime('docker', reached), (l) => said.push(l));
    assert.equal(reached, ['swap'], 'Swarm took its own restore up');
    assert.match(said.join('\n'), /interrupted db:restore to t/);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test.run();

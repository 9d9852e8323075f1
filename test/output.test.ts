import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import prompts from 'prompts';
import { redact } from '@dbkit/core/redact';
import { createLog } from '@dbkit/core/output';
import { confirmDestructive, promptsAsk } from '@dbkit/core/confirm';
import { UserError } from '@dbkit/core/errors';
import { capture } from './setup/ctx.ts';

const red = suite('redact');

red('removes a URL password, a password= pair, and known secrets raw and percent-encoded', () => {
  const pw = 'p@ss:w/rd?#%& é';
  const text = `postgres://app:${encodeURIComponent(pw)}@db:5432/app password=${pw.slice(0, 4)}x raw ${pw} enc ${encodeURIComponent(pw)}`;
  const out = redact(text, [pw]);
  assert.not.ok(out.includes(pw));
  assert.not.ok(out.includes(encodeURIComponent(pw)));
  assert.match(out, /postgres:\/\/app:\*\*\*@db:5432\/app/);
  assert.match(out, /password=\*\*\*/);
});

red('leaves text without credentials alone', () => {
  assert.is(redact('connect to postgres://db:5432/app failed', ['hunter22']), 'connect to postgres://db:5432/app failed');
});

red.run();

const out = suite('output');

out('a log redacts secrets it was told about, on both streams', () => {
  const sink = capture();
  const log = createLog(sink);
  log.secret('s3cret-value');
  log.info('tried s3cret-value');
  log.result('got s3cret-value');
  assert.not.ok(sink.stdout.includes('s3cret-value') || sink.stderr.includes('s3cret-value'));
});

out('--json puts one JSON document on stdout and keeps diagnostics on stderr', () => {
  const sink = capture();
  const log = createLog(sink, { json: true });
  log.step('working');
  log.result('text for people', { version: 3 });
  assert.equal(JSON.parse(sink.stdout), { version: 3 });
  assert.match(sink.stderr, /working/);
});

out('without a terminal a progress bar prints one plain line per item and no escape codes', () => {
  const sink = capture(false);
  const bar = createLog(sink).spinner('migrating');
  bar.update(0, 0, '0.1s'); // a wait tick: nothing when piped
  bar.update(1, 2, 'a.up.sql');
  bar.update(2, 2, 'b.up.sql');
  bar.end();
  assert.is(sink.stderr, 'migrating 1/2 a.up.sql\nmigrating 2/2 b.up.sql\n');
});

out('on a terminal the spinner redraws one line and clears it before other output', () => {
  const sink = capture(true);
  const log = createLog(sink);
  const bar = log.spinner('waiting');
  bar.update(0, 0, '0.1s');
  log.info('done');
  assert.match(sink.stderr, /\r\x1b\[2K.*waiting 0\.1s\r\x1b\[2Kdone\n$/);
});

out.run();

const ask = suite('confirmations');

ask('prompts answers No by default (injected answer) and the task is aborted with exit 1', async () => {
  prompts.inject([false]);
  const err = await confirmDestructive({ ask: promptsAsk, interactive: true }, 'db:delete', 'Delete?', false).catch((e) => e);
  assert.instance(err, UserError);
  assert.is(err.exitCode, 1);
  assert.match(err.message, /aborted, nothing was changed/);
});

ask('a yes goes ahead', async () => {
  prompts.inject([true]);
  await confirmDestructive({ ask: promptsAsk, interactive: true }, 'db:delete', 'Delete?', false);
});

ask('without a terminal it refuses without asking, unless --yes', async () => {
  let asked = false;
  const c = { ask: async () => ((asked = true), true), interactive: false };
  const err = await confirmDestructive(c, 'db:fresh', 'Delete?', false).catch((e) => e);
  assert.match(err.message, /needs confirmation and there is no terminal/);
  assert.not.ok(asked);
  await confirmDestructive(c, 'db:fresh', 'Delete?', true);
  assert.not.ok(asked);
});

ask.run();

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { createRequire } from 'node:module';
import { connect } from '@dbkit/core/pg';
import { freePort } from './setup/project.ts';

// connect() shows pg a `navigator` while pg loads (its Cloudflare probe otherwise loads undici on
// Node 20): pg must still pick Node's sockets, and the global must be as it was afterwards.
test('loading pg through connect() leaves the globals as they were and pg on Node sockets', async () => {
  const before = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  const port = await freePort();
  await connect({ host: '127.0.0.1', port, user: 'nobody', password: 'x', database: 'x', ca: '' }, 2000).then(
    () => assert.unreachable('connected to a port nobody listens on'),
    (e: NodeJS.ErrnoException) => assert.is(e.code, 'ECONNREFUSED', String(e)),
  );
  assert.equal(Object.getOwnPropertyDescriptor(globalThis, 'navigator'), before);
  const requireFromCore = createRequire(new URL('../packages/core/package.json', import.meta.url));
  const stream = requireFromCore('pg/lib/stream.js') as { getStream: (ssl: boolean) => unknown };
  assert.instance(stream.getStream(false), net.Socket);
});

test.run();

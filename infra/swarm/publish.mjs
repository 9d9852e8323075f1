// The published port of a Swarm service that is updated start-first (the example api), held by a
// process of its own. A host-mode port belongs to one task: the service's old task would hold it while
// its successor waits for it ("host-mode port already in use"), and the update would never end. This
// process holds no secret, so a rotation never changes it; each connection goes to a task that the
// service's name resolves to at that moment (endpoint_mode dnsrr: Swarm adds a task to the name once it
// is healthy and removes it before stopping it), or to the next one when that one refuses. Nothing is
// retried later: with no task to take it, a connection is closed at once.
// usage: node publish.mjs SERVICE PORT...   (each PORT is the service's, published as the same number)
import dns from 'node:dns/promises';
import net from 'node:net';

const [service, ...ports] = process.argv.slice(2);
if (!service || !ports.length) {
  process.stderr.write('usage: node publish.mjs SERVICE PORT...\n');
  process.exit(2);
}

/** Connects `client` to `port` on the first of `addresses` that answers within 2 s. */
function attempt(client, port, addresses) {
  const [address, ...rest] = addresses;
  if (!address || client.destroyed) return client.destroy();
  const upstream = net.connect({ port, host: address, timeout: 2000 });
  const next = () => {
    upstream.destroy();
    attempt(client, port, rest);
  };
  upstream.once('timeout', next);
  upstream.once('error', next);
  upstream.once('connect', () => {
    upstream.setTimeout(0);
    upstream.removeAllListeners('timeout');
    upstream.removeAllListeners('error');
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.pipe(upstream).pipe(client);
    client.resume();
  });
}

for (const port of ports.map(Number)) {
  net
    .createServer((client) => {
      client.pause();
      client.on('error', () => {}); // a client that goes away before its upstream answers
      dns.lookup(service, { all: true }).then(
        (found) =>
          attempt(
            client,
            port,
            found.map((a) => a.address),
          ),
        () => client.destroy(),
      );
    })
    .listen(port, () => process.stdout.write(`publish: port ${port} -> ${service}:${port}\n`));
}

// As PID 1 node ignores SIGTERM unless handled.
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

// A minimal example application for the compose `api` service. GET /health queries the database as
// the application role over a verify-full TLS session and answers 200 only if that worked. The
// session is kept between requests, as an application's pool keeps its own, and a new login is made
// only when it is gone: a session outlives a password rotation (ALTER ROLE changes only later
// logins), so the old task keeps answering until its successor, started with the new password,
// replaces it.
// The credentials come from the secret files, never from the environment or argv, so neither
// `docker inspect` nor /proc/<pid>/cmdline shows them.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import pg from 'pg';

const env = process.env;
const secretsDir = env.SECRETS_DIR || '/run/secrets';

/** Reads one secret file; a missing or empty one stops the service with the fix. */
function secret(name) {
  const file = path.join(secretsDir, name);
  let value = '';
  try {
    value = fs.readFileSync(file, 'utf8');
  } catch {
    // missing: reported below, like an empty file
  }
  if (!value) {
    process.stderr.write(`api: secret ${file} is missing or empty; create it with pnpm db:secrets, then recreate the container\n`);
    process.exit(1);
  }
  return value;
}

/**
 * The servers to try, in order: DB_HOST and DB_PORT take libpq's multi-host form (`a,b` and
 * `5432,5433`, or one port for every host). node-postgres connects to one host only, so the list and
 * target_session_attrs=read-write are done here: the first server that is not in recovery wins.
 */
function servers() {
  const hosts = (env.DB_HOST || 'api-db').split(',');
  const ports = (env.DB_PORT || '5432').split(',').map(Number);
  if (ports.length !== 1 && ports.length !== hosts.length) {
    process.stderr.write(`api: DB_PORT lists ${ports.length} ports for ${hosts.length} hosts; give one port, or one per host\n`);
    process.exit(1);
  }
  return hosts.map((host, i) => ({ host, port: ports.length === 1 ? ports[0] : ports[i] }));
}

const db = {
  servers: servers(),
  user: secret('app_user'),
  password: secret('app_password'),
  database: secret('postgres_db'),
  // verify-full: node checks the chain against our CA and the host name against the subjectAltName.
  ca: fs.readFileSync(env.DB_CA_FILE || path.join(secretsDir, 'ca_crt'), 'utf8'),
  connectionTimeoutMillis: 3000,
  application_name: 'api health',
};

// Root only long enough to read the secrets (bind mounts with the host's owner and mode 0600).
const runAs = env.APP_USER ?? 'node';
if (process.getuid?.() === 0 && runAs) {
  process.initgroups(runAs, runAs);
  process.setgid(runAs);
  process.setuid(runAs);
}

/** A verified TLS session with the first server of the list that takes writes (libpq's target_session_attrs=read-write). */
async function connectReadWrite() {
  const why = [];
  for (const { host, port } of db.servers) {
    const client = new pg.Client({
      host,
      port,
      user: db.user,
      password: db.password,
      database: db.database,
      // verify-full: node checks the chain against our CA and the host name (or IP) against the subjectAltName.
      ssl: { ca: db.ca, rejectUnauthorized: true, host },
      connectionTimeoutMillis: db.connectionTimeoutMillis,
      // A kept session whose server went silent fails the request instead of hanging it.
      query_timeout: 5000,
      application_name: db.application_name,
    });
    client.on('error', () => {}); // a server that goes away mid-session surfaces in the next query
    try {
      await client.connect();
      const r = await client.query('SELECT pg_is_in_recovery() AS standby');
      if (!r.rows[0].standby) return { client, server: `${host}:${port}` };
      why.push(`${host}:${port} is a standby (read-only)`);
    } catch (e) {
      why.push(`${host}:${port}: ${e?.message ?? e}`);
    }
    await client.end().catch(() => {});
  }
  throw new Error(`no server takes writes: ${why.join('; ')}`);
}

/** The kept session (a promise, so that concurrent requests share one login). */
let kept;

/** The kept session while it works and its server takes writes; else a new login (connectReadWrite). */
async function session() {
  const mine = kept;
  if (mine) {
    const s = await mine.catch(() => undefined);
    const standby = await s?.client.query('SELECT pg_is_in_recovery() AS standby').then(
      (r) => r.rows[0].standby,
      () => undefined, // gone (a restarted or stopped server): log in again
    );
    if (standby === false) return s;
    if (kept === mine) kept = undefined;
    s?.client.end().catch(() => {});
  }
  const now = (kept ??= connectReadWrite());
  return now.catch((e) => {
    if (kept === now) kept = undefined;
    throw e;
  });
}

/** A query over a verified TLS session with the server that takes writes; the error message never carries the password. */
async function health() {
  const { client, server } = await session();
  const r = await client.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
  // Which server answered, where there is a choice (a multi-host DB_HOST).
  return { status: 'ok', tls: r.rows[0]?.ssl === true, ...(db.servers.length > 1 && { server }) };
}

const server = http.createServer(async (req, res) => {
  const reply = (code, body) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(body)}\n`);
  };
  if (req.method !== 'GET' || req.url !== '/health') return reply(404, { error: 'not found' });
  try {
    reply(200, await health());
  } catch (e) {
    reply(503, {
      status: 'unavailable',
      error: String(e?.message ?? e)
        .split(db.password)
        .join('***'),
    });
  }
});

// As PID 1 node ignores SIGTERM unless handled: without this, `docker compose stop` waits for SIGKILL.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}

server.listen(Number(env.PORT || 8080), env.LISTEN_HOST || '0.0.0.0', () => {
  const a = server.address();
  const list = db.servers.map((x) => `${x.host}:${x.port}`).join(',');
  process.stdout.write(`api: listening on ${a.address}:${a.port}, database ${list} (verify-full TLS, the first that takes writes)\n`);
});

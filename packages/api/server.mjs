// A minimal example application for the compose `api` service. GET /health logs in to the database
// as the application role over verify-full TLS and answers 200 only if that worked.
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

const db = {
  host: env.DB_HOST || 'api-db',
  port: Number(env.DB_PORT || 5432),
  user: secret('app_user'),
  password: secret('app_password'),
  database: secret('postgres_db'),
  // verify-full: node checks the chain against our CA and the host name against the subjectAltName.
  ssl: { ca: fs.readFileSync(env.DB_CA_FILE || path.join(secretsDir, 'ca_crt'), 'utf8'), rejectUnauthorized: true },
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

/** One verified TLS login and a query; the error message never carries the password. */
async function health() {
  const client = new pg.Client(db);
  try {
    await client.connect();
    const r = await client.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    return { status: 'ok', tls: r.rows[0]?.ssl === true };
  } finally {
    await client.end().catch(() => {});
  }
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
  process.stdout.write(`api: listening on ${a.address}:${a.port}, database ${db.host}:${db.port} (verify-full TLS)\n`);
});

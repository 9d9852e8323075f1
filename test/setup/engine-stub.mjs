// Stands in for the Docker engine (none runs here) and records exactly what the tool sends it.
// Called through a wrapper: `node engine-stub.mjs docker|docker-compose ARGS...`. Each call appends
// one JSON line to $DOCKER_STUB_LOG: { prog, argv, env, stdin }.
//
// DOCKER_STUB_MODE:
//   ok         Compose v2 2.29.0 and Engine 27.0.0 answer; compose commands succeed (the default)
//   no-engine  Compose v2 is installed, but `docker info` cannot reach a daemon
//   v1-only    `docker compose` does not exist; `docker-compose` (v1) answers
//
// With DOCKER_STUB_SECRETS_DIR, DOCKER_STUB_PGHOST and DOCKER_STUB_PGPORT set, `exec ... api-db
// /usr/local/bin/db-admin-sql DB` runs our real admin-sql.sh against that (native) server's socket,
// as the container would: the SQL and the rows pass through unchanged.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [prog, ...argv] = process.argv.slice(2);
const env = process.env;
const mode = env.DOCKER_STUB_MODE || 'ok';
const ADMIN_SQL = '/usr/local/bin/db-admin-sql';
const takesStdin = argv.includes(ADMIN_SQL);
const stdin = takesStdin ? fs.readFileSync(0, 'utf8') : '';

fs.appendFileSync(env.DOCKER_STUB_LOG, `${JSON.stringify({ prog, argv, env, stdin })}\n`);

const out = (s) => process.stdout.write(`${s}\n`);
const fail = (s, code = 1) => {
  process.stderr.write(`${s}\n`);
  process.exit(code);
};

if (prog === 'docker-compose') {
  if (mode !== 'v1-only') fail('docker-compose: command not found', 127);
  if (argv[0] === 'version') out('1.29.2');
  process.exit(0);
}

if (argv[0] === 'info') {
  if (mode === 'no-engine') fail('Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?');
  out('27.0.0');
  process.exit(0);
}

if (argv[0] === 'compose') {
  if (mode === 'v1-only') fail("docker: 'compose' is not a docker command.\nSee 'docker --help'");
  if (argv[1] === 'version') {
    out('2.29.0');
    process.exit(0);
  }
  const sub = argv[3]; // compose -f FILE <sub>
  if (sub === 'ps') out('0123456789ab');
  if (sub === 'exec' && takesStdin && env.DOCKER_STUB_SECRETS_DIR) {
    const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../database/infra/scripts/admin-sql.sh');
    const r = spawnSync('sh', [script, ...argv.slice(argv.indexOf(ADMIN_SQL) + 1)], {
      input: stdin,
      env: { PATH: env.PATH, SECRETS_DIR: env.DOCKER_STUB_SECRETS_DIR, PGHOST: env.DOCKER_STUB_PGHOST, PGPORT: env.DOCKER_STUB_PGPORT },
      stdio: ['pipe', 'inherit', 'inherit'],
    });
    process.exit(r.status ?? 1);
  }
  process.exit(0);
}

fail(`docker stub: unexpected command: ${argv.join(' ')}`);

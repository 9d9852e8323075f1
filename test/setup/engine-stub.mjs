// Stands in for a Docker installation that a real engine cannot be made into: an engine or a Compose
// too old for this project, Compose v2 missing (only v1's docker-compose, or v2 installed as a
// program the docker CLI does not find). What containers do is shown by a real engine
// (test/docker-*.test.ts), and no engine at all by pointing DOCKER_HOST at nothing: neither needs this.
// test/backup-docker.test.ts still records its calls through it (see db-admin-sql below).
//
// Called through a wrapper: `node engine-stub.mjs docker|docker-compose ARGS...`. Each call appends
// one JSON line to $DOCKER_STUB_LOG: { prog, argv, env, stdin } (engine-stub.ts reads them back).
//
//   DOCKER_STUB_ENGINE      the version `docker info` reports (default 27.0.0)
//   DOCKER_STUB_COMPOSE     the version `docker compose version --short` reports (default 2.29.0);
//                           `none`: the docker CLI has no compose plugin
//   DOCKER_STUB_STANDALONE  the version the `docker-compose` program reports (1.29.2 is v1); unset:
//                           there is no such program
//
// Compose commands succeed; `ps` says api-db runs. With DOCKER_STUB_SECRETS_DIR, DOCKER_STUB_PGHOST
// and DOCKER_STUB_PGPORT set, `exec ... api-db /usr/local/bin/db-admin-sql DB` runs our real
// admin-sql.sh against that (native) server's socket, as the container would: the SQL and the rows
// pass through unchanged.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [prog, ...argv] = process.argv.slice(2);
const env = process.env;
const engineVersion = env.DOCKER_STUB_ENGINE || '27.0.0';
const composeVersion = env.DOCKER_STUB_COMPOSE || '2.29.0';
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
  if (!env.DOCKER_STUB_STANDALONE) fail('docker-compose: command not found', 127);
  if (argv[0] === 'version') out(env.DOCKER_STUB_STANDALONE);
  process.exit(0);
}

if (argv[0] === 'info') {
  out(engineVersion);
  process.exit(0);
}

if (argv[0] === 'compose') {
  if (composeVersion === 'none') fail("docker: 'compose' is not a docker command.\nSee 'docker --help'");
  if (argv[1] === 'version') {
    out(composeVersion);
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

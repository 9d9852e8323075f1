#!/bin/sh
# db-psql inside the api-db container: psql as the application user over verified TLS, with the
# caller's arguments (pnpm db:psql runs `docker compose exec api-db /usr/local/bin/db-psql ...`).
# The secrets are read here, inside the container, so none passes through the host's argv. On Docker
# Swarm api-db holds no app_password (rotating it would restart the database): pnpm db:psql hands it
# over as PGPASSWORD in docker exec's environment (`-e PGPASSWORD`, from the docker CLI's own
# environment: never in argv, nor in docker inspect).
set -eu

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"
# start.sh installs the CA beside the server's own certificate.
TLS_DIR="${TLS_DIR:-/etc/postgresql/tls}"

# shellcheck source-path=SCRIPTDIR source=db-secrets.sh
. "$(dirname "$0")/db-secrets.sh"

PGUSER="$(read_secret app_user)"
PGDATABASE="$(read_secret postgres_db)"
PGPASSWORD="${PGPASSWORD:-$(read_secret app_password)}"
# localhost is in the certificate's subjectAltName, so verify-full holds inside the container too.
PGHOST="${PGHOST:-localhost}"
PGPORT="${PGPORT:-5432}"
PGSSLMODE=verify-full
PGSSLROOTCERT="$TLS_DIR/ca.crt"
export PGUSER PGDATABASE PGPASSWORD PGHOST PGPORT PGSSLMODE PGSSLROOTCERT

exec psql "$@"

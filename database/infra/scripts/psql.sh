#!/bin/sh
# db-psql inside the api-db container: psql as the application user over verified TLS, with the
# caller's arguments (pnpm db:psql runs `docker compose exec api-db /usr/local/bin/db-psql ...`).
# The secrets are read here, inside the container, so none passes through the host's argv.
set -eu

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"
# start.sh installs the CA beside the server's own certificate.
TLS_DIR="${TLS_DIR:-/etc/postgresql/tls}"

# usage: read_secret NAME
#    prints the content of the secret file NAME; exits 1 with the fix when it is missing or empty
read_secret() {
	if [ ! -s "$SECRETS_DIR/$1" ]; then
		printf >&2 'db-psql: secret %s is missing or empty; create it with pnpm db:secrets, then recreate the container\n' "$SECRETS_DIR/$1"
		exit 1
	fi
	cat "$SECRETS_DIR/$1"
}

PGUSER="$(read_secret app_user)"
PGDATABASE="$(read_secret postgres_db)"
PGPASSWORD="$(read_secret app_password)"
# localhost is in the certificate's subjectAltName, so verify-full holds inside the container too.
PGHOST="${PGHOST:-localhost}"
PGPORT="${PGPORT:-5432}"
PGSSLMODE=verify-full
PGSSLROOTCERT="$TLS_DIR/ca.crt"
export PGUSER PGDATABASE PGPASSWORD PGHOST PGPORT PGSSLMODE PGSSLROOTCERT

exec psql "$@"

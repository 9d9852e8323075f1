#!/bin/sh
# db-admin-sql inside the api-db container: runs the SQL on stdin as the superuser, over the
# server's own Unix socket (pg_hba.conf refuses the superuser over TCP). pnpm db:up provisions the
# roles through it: `docker compose exec --no-TTY api-db /usr/local/bin/db-admin-sql DATABASE`.
# Prints one line per result row, its fields separated by the ASCII unit separator (0x1f).
#
# usage: db-admin-sql [DATABASE]    (SQL on stdin; DATABASE defaults to postgres)
set -eu

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"

# shellcheck source-path=SCRIPTDIR source=db-secrets.sh
. "$(dirname "$0")/db-secrets.sh"

PGUSER="$(read_secret postgres_user)"
PGPASSWORD="$(read_secret postgres_password)"
# From the environment, not -d: libpq would read a -d value containing "=" as connection options.
PGDATABASE="${1:-postgres}"
# The image's socket directory; the local line of pg_hba.conf still asks for the password.
PGHOST="${PGHOST:-/var/run/postgresql}"
export PGUSER PGPASSWORD PGDATABASE PGHOST

# -X: no ~/.psqlrc; -q -A -t: rows only, unaligned; stop at the first error with a non-zero exit.
exec psql -X -q -A -t -v ON_ERROR_STOP=1 -F "$(printf '\037')" -f -

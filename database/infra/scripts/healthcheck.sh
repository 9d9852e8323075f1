#!/bin/sh
# Healthcheck of the api-db service: healthy once the real server accepts TCP connections.
# Over TCP on purpose: during first-start initialisation the image's entrypoint runs a temporary
# server on the Unix socket only, and a socket check would call it ready before the real one starts.
set -eu

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"

# shellcheck source-path=SCRIPTDIR source=db-secrets.sh
. "$(dirname "$0")/db-secrets.sh"

# The application role, though no password is sent: pg_isready asks only whether the server answers.
# A role pg_hba.conf admits over TLS is asked for a password, and the server lets the unanswered
# challenge go quietly; any other role (the superuser, say) is rejected with a FATAL log line at
# every check.
user="$(read_secret app_user)"
db="$(read_secret postgres_db)"

exec pg_isready -h 127.0.0.1 -p "${PGPORT:-5432}" -U "$user" -d "$db"

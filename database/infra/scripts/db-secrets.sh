#!/bin/sh
# Sourced by the api-db scripts (psql.sh, admin-sql.sh, healthcheck.sh), from the folder they are
# run from: mounted beside them as /usr/local/bin/db-secrets.sh. One reading of a secret file, with
# one message when it is missing or empty, for all of them.
# SECRETS_DIR defaults to /run/secrets; messages are signed with the sourcing script's name.

# usage: read_secret NAME
#    prints the content of the secret file NAME; exits 1 with the fix when it is missing or empty
read_secret() {
	if [ ! -s "${SECRETS_DIR:-/run/secrets}/$1" ]; then
		printf >&2 '%s: secret %s is missing or empty; create it with pnpm db:secrets, then recreate the container\n' "$(basename "$0")" "${SECRETS_DIR:-/run/secrets}/$1"
		exit 1
	fi
	cat "${SECRETS_DIR:-/run/secrets}/$1"
}

#!/bin/sh
# Entrypoint of the db-migrate service: golang-migrate against api-db over verified TLS.
# The password travels in PGPASSWORD (lib/pq, migrate's driver, reads it), never in the URL: the
# URL is an argument, readable by anyone in /proc/<pid>/cmdline, and ends up in error messages.
# busybox sh only (the migrate/migrate image has no bash).
set -eu

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"

# usage: read_secret NAME
#    prints the content of the secret file NAME; exits 1 with the fix when it is missing or empty
read_secret() {
	if [ ! -s "$SECRETS_DIR/$1" ]; then
		printf >&2 'run-migration: secret %s is missing or empty; create it with pnpm db:secrets\n' "$SECRETS_DIR/$1"
		exit 1
	fi
	cat "$SECRETS_DIR/$1"
}

# usage: urlencode STRING
#    prints STRING percent-encoded byte by byte; only RFC 3986 unreserved characters stay as they are
urlencode() {
	for byte in $(printf '%s' "$1" | od -An -v -tx1 | tr 'abcdef' 'ABCDEF'); do
		case "$byte" in
			3[0-9] | 4[1-9A-F] | 5[0-9A] | 6[1-9A-F] | 7[0-9A] | 2[DE] | 5F | 7E)
				printf '%b' "\\0$(printf '%o' "0x$byte")"
				;;
			*)
				printf '%%%s' "$byte"
				;;
		esac
	done
}

# The migration role owns the schema; the superuser may not log in over TCP at all.
user="$(read_secret migrate_user)"
PGPASSWORD="$(read_secret migrate_password)"
export PGPASSWORD
db="$(read_secret postgres_db)"

ca="${DB_CA_FILE:-/run/secrets/ca_crt}"
if [ ! -s "$ca" ]; then
	printf >&2 'run-migration: CA certificate %s is missing or empty; create it with pnpm db:secure\n' "$ca"
	exit 1
fi

url="postgres://$(urlencode "$user")@${DB_HOST:-api-db}:${DB_PORT:-5432}/$(urlencode "$db")?sslmode=verify-full&sslrootcert=$(urlencode "$ca")"

exec migrate -path "${MIGRATIONS_DIR:-/migrations}" -database "$url" "$@"

#!/bin/sh
# Entrypoint of the api-db service (mounted as /usr/local/bin/db-start): installs the TLS key and
# certificates where postgresql.conf expects them, then hands over to the image's own entrypoint.
# The key arrives as a compose secret, a read-only bind mount of the host file with the host's
# owner and mode. PostgreSQL wants it 0600 and owned by its own user; chown-ing the mount would
# change the host file's owner, so the key is copied into the container's filesystem instead.
#
# usage: db-start [postgres options...]
#        db-start --install-tls-only    (installs the files and exits: a renewed certificate, then
#                                        SELECT pg_reload_conf(), without restarting the server)
set -eu

TLS_SOURCE_DIR="${TLS_SOURCE_DIR:-/run/secrets}"
TLS_DIR="${TLS_DIR:-/etc/postgresql/tls}"

# usage: install_tls_file SECRET_NAME FILE_NAME MODE
#    copies secret SECRET_NAME to $TLS_DIR/FILE_NAME, owned by postgres, with MODE
install_tls_file() {
	if [ ! -s "$TLS_SOURCE_DIR/$1" ]; then
		printf >&2 'db-start: %s is missing or empty; create the certificates with pnpm db:secure, then recreate the container\n' "$TLS_SOURCE_DIR/$1"
		exit 1
	fi
	install -m "$3" -o postgres -g postgres "$TLS_SOURCE_DIR/$1" "$TLS_DIR/$2"
}

if [ "$(id -u)" != 0 ]; then
	printf >&2 'db-start: must run as root to hand the TLS key to the postgres user; remove "user:" from the api-db service\n'
	exit 1
fi

# No moment in which a copy of the key is readable by others.
umask 077
install -d -m 755 "$TLS_DIR"
install_tls_file server_key server.key 600
install_tls_file server_crt server.crt 644
# db-psql verifies the server against the CA from inside the container.
install_tls_file ca_crt ca.crt 644

if [ "${1:-}" = '--install-tls-only' ]; then
	exit 0
fi

# pnpm db:promote fenced this cluster when it promoted the standby: two primaries must never take writes.
if [ -n "${PGDATA:-}" ] && [ -e "$PGDATA/pg-deploy.fenced" ]; then
	printf >&2 'db-start: %s is fenced: %s; keep the promoted server, or rebuild the pair as the README says (Failover)\n' "$PGDATA" "$(head -n 1 "$PGDATA/pg-deploy.fenced")"
	exit 1
fi

exec docker-entrypoint.sh postgres -c config_file=/etc/postgresql/postgresql.conf "$@"

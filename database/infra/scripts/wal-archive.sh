#!/bin/sh
# PostgreSQL's archive_command: copies one finished WAL segment (or history file) into the archive.
#   archive_command = 'wal-archive.sh ARCHIVE_DIR %p %f'
# Exit 0 only once the file is durably in the archive; PostgreSQL keeps the segment and retries
# otherwise. Never overwrites: a file of that name with other content is an error (two servers
# archiving into one folder), the same content is success (a retry after a crash), as the
# PostgreSQL documentation advises ("Continuous Archiving", archive_command).
set -eu

# usage: die MESSAGE: one line on stderr (the server log), and a failure PostgreSQL retries
die() {
	echo "wal-archive: $1" >&2
	exit 1
}

[ "$#" -eq 3 ] || die "usage: wal-archive.sh ARCHIVE_DIR WAL_PATH WAL_NAME"
dir=$1
src=$2
name=$3

# Armed: `pnpm db:backup --physical` writes this file into the data directory, which is where
# PostgreSQL runs this command ("%p ... is relative to the current working directory, i.e., the
# cluster's data directory": the documentation of archive_command). Base backups copy it, so a
# cluster restored or streamed from an armed one is armed too, and archives into the same folder.
ARMED=pg-deploy.wal-armed

if [ ! -d "$dir" ]; then
	# Armed, yet the folder is gone (a disk not mounted, a volume not attached, a folder deleted):
	# discarding the segment would leave a hole no recovery can cross. Fail, so the server keeps it and
	# retries, and says why in its log; pg_wal grows meanwhile (db:doctor says so).
	[ ! -e "$ARMED" ] || die "the archive folder $dir is missing, but this cluster's archive is armed ($ARMED in its data directory): $name is kept in pg_wal and retried; mount or restore the folder (owned by the server's user, 0700), or, if it is lost, take a new base backup (pnpm db:backup --physical makes it again)"
	# Not armed yet: without a base backup no segment can be replayed, so it is recycled as if
	# archiving were off (nothing piles up in pg_wal).
	exit 0
fi

dest="$dir/$name"
if [ -e "$dest" ]; then
	cmp -s "$src" "$dest" && exit 0 # already archived, byte for byte: a retry
	die "$dest already exists with different content; refusing to overwrite it (is another server archiving into $dir?)"
fi

# A temporary name first, flushed, then linked to the real name: ln fails if another copy got there
# first, so an existing segment is never replaced, and a reader never sees a half-written one.
tmp="$dir/.$name.$$.tmp"
trap 'rm -f "$tmp"' EXIT
cp "$src" "$tmp" || die "could not copy $src to $dir (disk full, or a permission?)"
sync "$tmp" || die "could not flush $tmp"
if ! ln "$tmp" "$dest" 2>/dev/null; then
	cmp -s "$src" "$dest" && exit 0 # another attempt finished first, with the same bytes
	die "could not add $dest (it appeared with different content, or $dir is not writable)"
fi
sync "$dir" || die "could not flush the folder $dir"

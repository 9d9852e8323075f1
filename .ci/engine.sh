#!/usr/bin/env bash
# The Docker engine for CI and the real-engine tests, on a Debian 12 machine without one.
#   .ci/engine.sh install   Docker Engine and Compose v2 when missing: only docker.io and
#                           docker-compose come from Debian 13 (trixie), through a separate apt source
#                           list; the machine itself is never upgraded. Their dependencies (containerd,
#                           runc, iptables, tini) and mmdebstrap come from the machine's own suite.
#   .ci/engine.sh start     dockerd, when no engine answers (there is no systemd here)
#   .ci/engine.sh restart   stops the dockerd that `start` started and starts it again (the tests
#                           use it to show that the stack comes back); refuses any other dockerd
# The dockerd that `start` runs records its pid in $STATE/dockerd.pid: that is how `restart` knows the
# engine is ours to restart.
set -euo pipefail

STATE="${PGDEPLOY_ENGINE_STATE:-/run/pg-deploy-engine}"
TRIXIE="${PGDEPLOY_TRIXIE_DIR:-/var/cache/pg-deploy-trixie}"

# usage: answers    (exit 0 when an engine answers)
answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

# usage: wait_engine SECONDS
wait_engine() {
	local i
	for ((i = 0; i < $1 * 10; i++)); do
		answers && return 0
		sleep 0.1
	done
	echo "engine.sh: dockerd did not answer within $1 s; see $STATE/dockerd.log" >&2
	return 1
}

install_engine() {
	local need=()
	command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
	docker compose version >/dev/null 2>&1 || need+=(docker-compose)
	command -v docker >/dev/null 2>&1 || need+=(docker-cli)
	if [ ${#need[@]} -gt 0 ]; then
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq --no-install-recommends containerd runc iptables tini >/dev/null
		mkdir -p "$TRIXIE/lists/partial" "$TRIXIE/cache/archives/partial" "$TRIXIE/debs"
		echo 'deb http://deb.debian.org/debian trixie main' >"$TRIXIE/sources.list"
		local apt=(-o "Dir::Etc::SourceList=$TRIXIE/sources.list" -o Dir::Etc::SourceParts=/dev/null
			-o "Dir::State::Lists=$TRIXIE/lists" -o "Dir::Cache=$TRIXIE/cache")
		apt-get "${apt[@]}" update -qq
		(cd "$TRIXIE/debs" && apt-get "${apt[@]}" download "${need[@]}" 2>/dev/null)
		# policy-rc.d (if any) keeps the package from starting a service: `start` does that.
		dpkg -i "$TRIXIE"/debs/*.deb >/dev/null
	fi
	# Compose v2 is a CLI plugin: the docker client finds it in a cli-plugins folder.
	if ! docker compose version >/dev/null 2>&1; then
		mkdir -p /usr/local/lib/docker/cli-plugins
		ln -sf /usr/bin/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
	fi
	command -v mmdebstrap >/dev/null 2>&1 || apt-get install -y -qq mmdebstrap >/dev/null
}

start_engine() {
	answers && return 0
	mkdir -p "$STATE"
	# setsid: the engine outlives this script and the shell that ran it.
	setsid dockerd --pidfile "$STATE/dockerd.pid" >>"$STATE/dockerd.log" 2>&1 </dev/null &
	wait_engine 60
}

restart_engine() {
	local pid
	pid="$(cat "$STATE/dockerd.pid" 2>/dev/null || true)"
	if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "engine.sh: no dockerd started by engine.sh runs; restart it yourself" >&2
		exit 1
	fi
	kill -TERM "$pid"
	while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
	rm -f "$STATE/dockerd.pid"
	start_engine
}

case "${1:-}" in
	install) install_engine ;;
	start) start_engine ;;
	restart) restart_engine ;;
	*)
		echo "usage: $0 install|start|restart" >&2
		exit 2
		;;
esac

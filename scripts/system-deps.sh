#!/usr/bin/env bash
# The system tools the lab's tests and workshop commands use, installed from
# Debian's packages when they are missing (the way `make up` installs nginx).
# `make test`, `make bench`, `make timeline` and `make claims` run this first.
#
#   scripts/system-deps.sh          install what is missing (root), or stop with
#                                   one line naming the command to run
#   scripts/system-deps.sh --check  only say what is missing (exit 1 if anything)
#
# Python packages are not here: they live in .venv (`make install`).
# Docker is not here either: scripts/docker-engine.sh (the compose stack is
# tested only when an engine answers).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/apt.sh

say() { printf 'lab: %s\n' "$*" >&2; }

# tool | Debian package | what needs it
TOOLS=(
    "nginx|nginx-light|the native lab's web server, and \`nginx -t\` on every rendered config"
    "wrk|wrk|the load generator behind lab bench, timeline and claims, and their tests"
    "chromium|chromium|the dashboard tests drive it headless (Playwright, never its own download)"
    "fcgiwrap|fcgiwrap|the FastCGI server of the cgi/fcgiwrap server choice"
    "curl|curl|the README's and workshop's examples, HTTP/2 checks"
)

# A tool counts as present when it is on PATH or where Debian puts it
# (/usr/sbin is not on every user's PATH; chromium may be pointed at by LAB_CHROMIUM).
present() {
    local tool=$1
    if [[ $tool == chromium && -n ${LAB_CHROMIUM:-} ]]; then
        [[ -x $LAB_CHROMIUM ]]
        return
    fi
    command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool || -x /usr/bin/$tool ]]
}

missing_pkgs=()
for entry in "${TOOLS[@]}"; do
    IFS='|' read -r tool pkg why <<<"$entry"
    if ! present "$tool"; then
        missing_pkgs+=("$pkg")
        reasons+=("$pkg: $why")
    fi
done

if ((${#missing_pkgs[@]} == 0)); then
    exit 0
fi
cmd="apt-get install -y --no-install-recommends ${missing_pkgs[*]}"
if [[ ${1:-} == --check ]]; then
    say "missing: ${missing_pkgs[*]} (install: $cmd)"
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing_pkgs[*]} and no apt-get here: install them with your package manager"
    exit 1
fi
if [[ $(id -u) != 0 ]]; then
    say "missing ${missing_pkgs[*]}: run \`sudo $cmd\` (or run make as root)"
    exit 1
fi
for reason in "${reasons[@]}"; do say "installing $reason"; done
if ! apt_install "${missing_pkgs[@]}"; then
    say "apt-get could not install ${missing_pkgs[*]}: run \`$cmd\` and read its error"
    exit 1
fi
for entry in "${TOOLS[@]}"; do
    IFS='|' read -r tool pkg _ <<<"$entry"
    present "$tool" || { say "$pkg installed but $tool is still missing"; exit 1; }
done
say "installed ${missing_pkgs[*]}"

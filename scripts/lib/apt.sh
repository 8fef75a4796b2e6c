# Sourced by the scripts in scripts/: the one way this project installs Debian
# packages. apt_install PKG... installs what is asked, quietly, trying the
# package lists already on the machine first and refreshing them only when that
# fails (a fresh machine has none). Needs root; callers check and say why.
# Returns apt-get's status; the caller turns a failure into one clear line.

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local log
    log=$(mktemp /tmp/lab-apt.XXXXXX)
    if apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1 ||
        { apt-get update -qq >>"$log" 2>&1 &&
            apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1; }; then
        rm -f "$log"
        return 0
    fi
    tail -n 5 "$log" >&2
    printf '(full apt-get log: %s)\n' "$log" >&2
    return 1
}

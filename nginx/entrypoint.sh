#!/bin/sh
# lab-nginx: nginx in the lab's container, configured by lab/nginx/ (python3 -m lab.nginx).
#
#   lab-nginx start          render the config into $CONF_DIR, then exec nginx (the CMD)
#   lab-nginx switch MODE    make MODE (or a split like wsgi=90,asgi=10) the default of "/":
#                            re-render active_mode.conf, `nginx -t`, graceful reload;
#                            on a failed test the previous file is put back
#   lab-nginx reload         `nginx -t`, then graceful reload (re-resolves the gateways'
#                            names, e.g. after `docker compose up --scale`)
#   lab-nginx mode           print the active mode (or split)
#   lab-nginx server MODE=SERVER [--set MODE_server=ADDR]
#                            reach MODE's gateway as SERVER speaks (proxy, FastCGI,
#                            uwsgi): re-render pass_MODE.conf (and, with --set,
#                            pin upstreams.conf to ADDR), `nginx -t`, graceful
#                            reload; on a failed test the previous files are put back
#
# LAB_MODE sets the mode (or split) at first start; after a switch the choice is
# recorded in $STATE_FILE and a restarted container starts in it. LAB_SERVER_CGI,
# _WSGI and _ASGI set the server behind each mode at first start; after
# `lab-nginx server` the choice is recorded in $SERVERS_FILE likewise. The LAB_*
# limits are read by the renderer (lab/settings.py).
set -eu

CONF_DIR=${LAB_NGINX_CONF_DIR:-/tmp/nginx-conf}
CONF=$CONF_DIR/nginx.conf
STATE_FILE=${LAB_STATE_FILE:-/var/lib/lab/active_mode}
# The lab's CA and nginx's certificate: the volume the renderer's compose
# target points ssl_certificate at (lab/nginx/render.py COMPOSE_TLS_DIR).
TLS_DIR=/var/lib/lab-tls
SERVERS_FILE=${LAB_SERVERS_FILE:-/var/lib/lab/servers}

# --server MODE=SERVER for each mode: the recorded choice, else LAB_SERVER_<MODE>.
server_args() {
    for mode in cgi wsgi asgi; do
        chosen=""
        if [ -s "$SERVERS_FILE" ]; then
            chosen=$(sed -n "s/^$mode=//p" "$SERVERS_FILE" | tail -n 1)
        fi
        if [ -z "$chosen" ]; then
            chosen=$(printenv "LAB_SERVER_$(echo "$mode" | tr a-z A-Z)" || true)
        fi
        if [ -n "$chosen" ]; then
            printf ' --server %s=%s' "$mode" "$chosen"
        fi
    done
}

# Remember MODE=SERVER (one line per mode) for a restart, where the volume is.
record_server() {
    dir=$(dirname "$SERVERS_FILE")
    [ -d "$dir" ] && [ -w "$dir" ] || return 0
    mode=${1%%=*}
    { grep -v "^$mode=" "$SERVERS_FILE" 2>/dev/null || true; echo "$1"; } > "$SERVERS_FILE.new"
    mv "$SERVERS_FILE.new" "$SERVERS_FILE"
}

# --mode M or --split A=n,B=m, whichever the argument is.
active_args() {
    case $1 in
        *=*) echo "--split $1" ;;
        *) echo "--mode $1" ;;
    esac
}

test_config() {
    nginx -q -t -e stderr -c "$CONF"
}

case ${1:-start} in
    start)
        mode=${LAB_MODE:-wsgi}
        if [ -s "$STATE_FILE" ]; then
            mode=$(cat "$STATE_FILE")
        fi
        # Made on the first start only (kept in the volume), so plain
        # `docker compose up` serves TLS too; `lab up` copies ca.pem out.
        lab-make-certs "$TLS_DIR"
        # Under swarm nothing orders the services' starts (no depends_on), and
        # nginx resolves the gateways' names when it loads its config: wait
        # (at most LAB_WAIT_FOR_GATEWAYS seconds) until each one resolves.
        waited=0
        for name in gateway-cgi gateway-wsgi gateway-asgi; do
            until [ -z "${LAB_WAIT_FOR_GATEWAYS:-}" ] || getent hosts "$name" >/dev/null; do
                if [ "$waited" -ge "$LAB_WAIT_FOR_GATEWAYS" ]; then
                    echo "lab-nginx: $name does not resolve after ${waited}s" >&2
                    exit 1
                fi
                sleep 1
                waited=$((waited + 1))
            done
        done
        # shellcheck disable=SC2046
        python3 -m lab.nginx render --target compose --out "$CONF_DIR" \
            $(active_args "$mode") $(server_args)
        # -e: errors before the config is read go to stderr too (the
        # default log path under /var/log is not writable here).
        exec nginx -e stderr -c "$CONF"
        ;;
    switch)
        [ $# -eq 2 ] || { echo "usage: lab-nginx switch MODE|SPLIT" >&2; exit 2; }
        previous=$CONF_DIR/.active_mode.conf.previous
        cp "$CONF_DIR/active_mode.conf" "$previous"
        # The renderer rejects an unknown mode before writing anything.
        # shellcheck disable=SC2046
        python3 -m lab.nginx active --out "$CONF_DIR" $(active_args "$2")
        if ! test_config; then
            mv "$previous" "$CONF_DIR/active_mode.conf"
            echo "lab-nginx: the new config fails nginx -t; kept the previous one" >&2
            exit 1
        fi
        rm -f "$previous"
        nginx -e stderr -c "$CONF" -s reload
        # Remember it for a restart; a container without the volume still switches.
        if [ -d "$(dirname "$STATE_FILE")" ] && [ -w "$(dirname "$STATE_FILE")" ]; then
            printf '%s\n' "$2" > "$STATE_FILE"
        fi
        ;;
    server)
        [ $# -ge 2 ] || { echo "usage: lab-nginx server MODE=SERVER [--set MODE_server=ADDR]" >&2; exit 2; }
        choice=$2
        shift 2
        mode=${choice%%=*}
        saved=$CONF_DIR/.server.previous
        mkdir -p "$saved"
        cp "$CONF_DIR/pass_$mode.conf" "$CONF_DIR/upstreams.conf" "$saved/"
        # The renderer rejects an unknown mode or server before writing anything.
        python3 -m lab.nginx server --target compose --out "$CONF_DIR" "$choice"
        # Pinned to an address (a container that is not the service yet), or back to the names.
        python3 -m lab.nginx upstreams --target compose --out "$CONF_DIR" "$@"
        if ! test_config; then
            cp "$saved/pass_$mode.conf" "$saved/upstreams.conf" "$CONF_DIR/"
            echo "lab-nginx: the new config fails nginx -t; kept the previous one" >&2
            exit 1
        fi
        rm -rf "$saved"
        nginx -e stderr -c "$CONF" -s reload
        record_server "$choice"
        ;;
    reload)
        test_config
        nginx -e stderr -c "$CONF" -s reload
        ;;
    mode)
        python3 -m lab.nginx show --out "$CONF_DIR"
        ;;
    *)
        # Anything else runs as a command (e.g. `docker compose run nginx sh`).
        exec "$@"
        ;;
esac

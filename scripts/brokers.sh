#!/usr/bin/env bash
# Runs the broker pair compose.yml describes, from this repository's
# fitz-broker binary instead of the real image, bound to loopback only:
#
#   auth  HS256 JWT required  ws://127.0.0.1:4090/ws  tcp://127.0.0.1:4091
#   anon  anonymous           ws://127.0.0.1:4190/ws  tcp://127.0.0.1:4191
#
# Usage: scripts/brokers.sh start|stop|restart|status
#
# start builds the release binary once (cargo build --release), then starts
# both brokers with the same environment as the compose services. Pid files,
# logs and data live under target/brokers/: <name>.pid, <name>.log and
# <name>-data (FITZ_STORAGE_MODE=local, so data survives stop/start; delete
# the directory for a clean slate). Override with FITZ_BROKERS_DIR,
# FITZ_BROKERS_STORAGE_MODE (memory|local) and FITZ_JOBS (build jobs).
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${FITZ_BROKERS_DIR:-target/brokers}"
mode="${FITZ_BROKERS_STORAGE_MODE:-local}"
jobs="${FITZ_JOBS:-2}"
bin="target/release/fitz-broker"
names=(auth anon)

pid_of() {
    local f="$dir/$1.pid"
    [[ -f "$f" ]] || return 1
    local pid
    pid="$(cat "$f")"
    # Only a live process that is our binary counts (pids get reused).
    if kill -0 "$pid" 2>/dev/null && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == *fitz-broker* ]]; then
        echo "$pid"
        return 0
    fi
    return 1
}

ports_of() {
    case "$1" in
        auth) echo "4090 4091" ;;
        anon) echo "4190 4191" ;;
    esac
}

wait_ready() {
    local name=$1 http=$2 tcp=$3
    for _ in $(seq 1 100); do
        if grep -q "fitz-broker listening" "$dir/$name.log" 2>/dev/null; then
            return 0
        fi
        if ! pid_of "$name" >/dev/null; then
            echo "$name exited; last log lines:" >&2
            tail -n 20 "$dir/$name.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    echo "$name did not report listening on $http/$tcp within 10 s" >&2
    return 1
}

start_one() {
    local name=$1
    if pid=$(pid_of "$name"); then
        echo "$name already running (pid $pid)"
        return 0
    fi
    read -r http tcp <<<"$(ports_of "$name")"
    local data="$dir/$name-data"
    mkdir -p "$data"
    # The compose services' environment; FITZ_BIND_ADDR keeps it on loopback
    # (compose publishes on 127.0.0.1 only). Variables the real image knows
    # but this broker does not use (FITZ_ADMIN_AUTH_MODE, ...) are harmless.
    local -a env=(
        FITZ_BIND_ADDR=127.0.0.1
        FITZ_HTTP_PORT="$http"
        FITZ_TCP_PORT="$tcp"
        FITZ_STORAGE_MODE="$mode"
        FITZ_STORAGE_PATH="$data"
        FITZ_ADMIN_AUTH_MODE=open
        RUST_LOG="${RUST_LOG:-info}"
    )
    if [[ "$name" == auth ]]; then
        env+=(
            FITZ_AUTH_REQUIRED=true
            FITZ_ASSUME_LOCAL_LOOPBACK_EDGE=true
            FITZ_JWT_HMAC_SECRET=dev-test-secret
            FITZ_JWT_AUDIENCE=fitz
            FITZ_ROUTE_FAMILY_MAP=dev=1
        )
    else
        env+=(FITZ_AUTH_REQUIRED=false)
    fi
    env -i PATH="$PATH" "${env[@]}" nohup "$bin" >"$dir/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
    wait_ready "$name" "$http" "$tcp"
    echo "$name started (pid $(cat "$dir/$name.pid")): ws://127.0.0.1:$http/ws tcp://127.0.0.1:$tcp"
}

stop_one() {
    local name=$1 pid
    if ! pid=$(pid_of "$name"); then
        echo "$name not running"
        rm -f "$dir/$name.pid"
        return 0
    fi
    kill -TERM "$pid"
    # The broker drains sessions for up to 5 s; give it 15 s like compose.
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name did not stop in 15 s; killing pid $pid" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
    echo "$name stopped"
}

status() {
    local rc=0
    for name in "${names[@]}"; do
        read -r http tcp <<<"$(ports_of "$name")"
        if pid=$(pid_of "$name"); then
            echo "$name running (pid $pid): ws://127.0.0.1:$http/ws tcp://127.0.0.1:$tcp"
        else
            echo "$name stopped"
            rc=3
        fi
    done
    return $rc
}

case "${1:-}" in
    start)
        mkdir -p "$dir"
        cargo build --release -p fitz-broker -j "$jobs"
        for name in "${names[@]}"; do start_one "$name"; done
        ;;
    stop)
        for name in "${names[@]}"; do stop_one "$name"; done
        ;;
    restart)
        "$0" stop
        "$0" start
        ;;
    status)
        status
        ;;
    *)
        echo "usage: $0 start|stop|restart|status" >&2
        exit 2
        ;;
esac

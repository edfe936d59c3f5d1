#!/usr/bin/env bash
# A ring of 1..3 Cassandra nodes on 127.0.0.1..127.0.0.N, each started by node.sh in
# <ringdir>/node<i>. Every node is a seed (so they can start in any order, or all at once) and
# none bootstraps (auto_bootstrap: false): the ring is for tests, it starts empty.
#
#   ring.sh start  <ringdir> <count> [--version V] [--num-tokens K] [--parallel] [node.sh options]
#   ring.sh stop   <ringdir> [--kill]
#   ring.sh status <ringdir>
#
# Tokens: by default one token per node, evenly spaced over the Murmur3 range (deterministic
# ownership: node i owns the range ending at -2^63 + (i-1) * 2^64/count); --num-tokens K gives
# each node K random vnode tokens instead. --parallel starts all nodes at once (default: one
# after the other). start waits (CASSANDRA_RING_TIMEOUT, 300 s) until node 1's nodetool status
# shows all nodes UN, then prints each node's start time and RSS.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE="$SCRIPT_DIR/node.sh"

log() { printf '[cassandra/ring] %s\n' "$*" >&2; }
die() { printf '[cassandra/ring] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

node_dirs() { # ringdir
    local d
    for d in "$1"/node[0-9]*; do [ -f "$d/node.env" ] && echo "$d"; done
}

rss_report() { # ringdir
    local d total=0 line rss
    while read -r d; do
        if line="$("$NODE" status "$d" 2>/dev/null)"; then
            rss="$(echo "$line" | sed -n 's/.*rss_kib=\([0-9]*\).*/\1/p')"
            total=$((total + rss))
            echo "$(basename "$d"): $line"
        else
            echo "$(basename "$d"): stopped"
        fi
    done < <(node_dirs "$1")
    echo "total RSS: $((total / 1024)) MiB"
}

cmd_start() {
    [ $# -ge 2 ] || usage
    local dir="$1" count="$2"; shift 2
    [[ "$count" =~ ^[1-3]$ ]] || die "count must be 1..3 (two shared cores), got '$count'"
    local num_tokens="" parallel=0 version="${CASSANDRA_VERSION:-5.0.9}"
    local -a pass=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --num-tokens) num_tokens="$2"; shift 2 ;;
            --parallel) parallel=1; shift ;;
            --version) version="$2"; shift 2 ;;
            --seeds|--initial-token) die "ring.sh sets $1 itself" ;;
            --auth) pass+=("$1"); shift ;;
            *) [ $# -ge 2 ] || die "option $1 needs a value"; pass+=("$1" "$2"); shift 2 ;;
        esac
    done
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local seeds i
    seeds="$(for i in $(seq 1 "$count"); do echo "127.0.0.$i"; done | paste -sd, -)"
    local -a pids=() opts
    local t0=$SECONDS
    for i in $(seq 1 "$count"); do
        opts=(--version "$version" --seeds "$seeds" "${pass[@]}")
        if [ -n "$num_tokens" ]; then
            opts+=(--num-tokens "$num_tokens")
        else
            # -2^63 + (i-1) * floor(2^64 / count), exact in bc
            opts+=(--initial-token "$(echo "-(2^63) + ($i - 1) * ((2^64) / $count)" | bc)")
        fi
        if [ "$parallel" = 1 ]; then
            "$NODE" start "$dir/node$i" "$i" "${opts[@]}" > "$dir/node$i.start.out" 2>&1 &
            pids+=($!)
        else
            "$NODE" start "$dir/node$i" "$i" "${opts[@]}" | tee "$dir/node$i.start.out" \
                || die "node $i failed to start (see $dir/node$i/logs)"
        fi
    done
    if [ "$parallel" = 1 ]; then
        local failed=0
        for i in "${!pids[@]}"; do
            if ! wait "${pids[$i]}"; then
                failed=1
                log "node $((i + 1)) failed to start:"
                tail -n 20 "$dir/node$((i + 1)).start.out" >&2
            else
                cat "$dir/node$((i + 1)).start.out" | grep '^started' || true
            fi
        done
        [ "$failed" = 0 ] || die "a node failed to start; stop the others with: $0 stop $dir"
    fi
    # All nodes up in one ring, as node 1 sees it.
    local timeout="${CASSANDRA_RING_TIMEOUT:-300}" un=0
    while :; do
        un="$("$NODE" nodetool "$dir/node1" status 2>/dev/null | grep -c '^UN ' || true)"
        [ "$un" -ge "$count" ] && break
        [ $((SECONDS - t0)) -lt "$timeout" ] || die "only $un of $count nodes UN after ${timeout}s"
        sleep 1
    done
    log "ring of $count up in $((SECONDS - t0)) s"
    rss_report "$dir"
}

cmd_stop() {
    [ $# -ge 1 ] || usage
    local d rc=0
    local -a pids=() extra=()
    [ "${2:-}" = --kill ] && extra=(--kill)
    # in parallel: each stop is mostly waiting for the node's shutdown hook
    while read -r d; do
        "$NODE" stop "$d" "${extra[@]}" & pids+=($!)
    done < <(node_dirs "$1")
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return "$rc"
}

[ $# -ge 1 ] || usage
sub="$1"; shift
case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) [ $# -ge 1 ] || usage; rss_report "$1" ;;
    *) usage ;;
esac

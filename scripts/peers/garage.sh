#!/usr/bin/env bash
# Three Garage nodes on 127.0.0.1 (3 zones, replication factor 3) for side-by-side benchmarks
# against Kura (issue 17). Daemons run as the current user from the data dir. Settings and
# their reasons: scripts/peers/README.md.
#
#   scripts/peers/garage.sh [--dir DIR] [--compression none|shipped|N] [--fsync none|data|metadata|both]
#                           up|down [--wipe]|status|env
set -euo pipefail

usage() {
    cat <<'EOF'
usage: garage.sh [options] <command>

commands:
  up            install garage with `cargo install` if missing, write the three nodes' configs
                from the options, start them, and on first use build the layout and create the
                S3 key and bucket
  down [--wipe] stop the three nodes (by pid file); --wipe also deletes DIR
  status        `garage status`, the layout and the settings in use
  env           print `export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_ENDPOINT_URL=...
                AWS_REGION=garage`

options (or environment), applied at every `up`:
  --dir DIR           data dir (GARAGE_PEER_DIR; default $HOME/.cache/kura/peers/garage)
  --compression C     none (default: the issue's reference setting), shipped (zstd level 1,
                      Garage's default) or a zstd level (GARAGE_PEER_COMPRESSION)
  --fsync F           none (default, as shipped), data, metadata or both: sets data_fsync /
                      metadata_fsync (GARAGE_PEER_FSYNC)
  --log FILTER        RUST_LOG for the nodes (GARAGE_PEER_LOG; default garage=warn,netapp=warn:
                      Garage's own default logs every request at info)
EOF
}

DIR=${GARAGE_PEER_DIR:-$HOME/.cache/kura/peers/garage}
COMPRESSION=${GARAGE_PEER_COMPRESSION:-none}
FSYNC=${GARAGE_PEER_FSYNC:-none}
LOG_FILTER=${GARAGE_PEER_LOG:-garage=warn,netapp=warn}
BUCKET=kura-bench
KEY_NAME=kura-bench
NODES="1 2 3"
# Node i listens on 39i0 (S3), 39i1 (RPC), 39i3 (admin): 3900, 3910, 3920 for S3.
s3_port() { echo $((3900 + 10 * ($1 - 1))); }
rpc_port() { echo $((3901 + 10 * ($1 - 1))); }
admin_port() { echo $((3903 + 10 * ($1 - 1))); }

CMD=""
WIPE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=$2; shift 2 ;;
        --compression) COMPRESSION=$2; shift 2 ;;
        --fsync) FSYNC=$2; shift 2 ;;
        --log) LOG_FILTER=$2; shift 2 ;;
        --wipe) WIPE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        up|down|status|env) CMD=$1; shift ;;
        *) echo "garage.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$CMD" ] || { usage >&2; exit 2; }

log() { echo "garage.sh: $*" >&2; }
die() { log "$*"; exit 1; }

case "$COMPRESSION" in
    none) COMPRESSION_TOML='"none"' ;;
    shipped) COMPRESSION_TOML=1 ;;
    *[!0-9-]*|'') log "--compression must be none, shipped or a zstd level"; exit 2 ;;
    *) COMPRESSION_TOML=$COMPRESSION ;;
esac
case "$FSYNC" in
    none) DATA_FSYNC=false; META_FSYNC=false ;;
    data) DATA_FSYNC=true; META_FSYNC=false ;;
    metadata) DATA_FSYNC=false; META_FSYNC=true ;;
    both) DATA_FSYNC=true; META_FSYNC=true ;;
    *) log "--fsync must be none, data, metadata or both"; exit 2 ;;
esac

# The binary lives under the default dir even when --dir moves the cluster elsewhere.
INSTALL_ROOT=${GARAGE_PEER_INSTALL_ROOT:-$HOME/.cache/kura/peers/garage}
GARAGE=$INSTALL_ROOT/bin/garage
GARAGE_VERSION=${GARAGE_PEER_VERSION:-2.5.0}

ensure_binary() {
    [ -x "$GARAGE" ] && return 0
    log "installing garage $GARAGE_VERSION with cargo into $INSTALL_ROOT (takes a while)"
    # A separate target dir: this build must not share Kura's.
    CARGO_TARGET_DIR=$INSTALL_ROOT/../garage-target \
        cargo install garage --version "$GARAGE_VERSION" --locked --root "$INSTALL_ROOT" >&2
    [ -x "$GARAGE" ] || die "cargo install finished but $GARAGE is missing"
}

conf() { echo "$DIR/node$1/garage.toml"; }
g() { timeout 60 "$GARAGE" -c "$(conf 1)" "$@"; }

bootstrap_peers() {
    # Known once the cluster exists: lets a restarted node find the others by itself (the
    # peer list Garage saves can be missing if it was stopped early).
    [ -f "$DIR/node_ids" ] || return 0
    printf 'bootstrap_peers = ['
    sed 's/.*/"&",/' "$DIR/node_ids" | tr -d '\n'
    printf ']\n'
}

write_conf() { # node
    local n=$1 secret
    secret=$(cat "$DIR/rpc_secret")
    mkdir -p "$DIR/node$n/meta" "$DIR/node$n/data"
    cat >"$(conf "$n").tmp" <<EOF
# Written by scripts/peers/garage.sh at every \`up\`; settings explained in scripts/peers/README.md.
metadata_dir = "$DIR/node$n/meta"
data_dir = "$DIR/node$n/data"
db_engine = "lmdb"
replication_factor = 3
consistency_mode = "consistent"
compression_level = $COMPRESSION_TOML
data_fsync = $DATA_FSYNC
metadata_fsync = $META_FSYNC
rpc_secret = "$secret"
rpc_bind_addr = "127.0.0.1:$(rpc_port "$n")"
rpc_public_addr = "127.0.0.1:$(rpc_port "$n")"
$(bootstrap_peers)

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$(s3_port "$n")"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$(admin_port "$n")"
EOF
    mv "$(conf "$n").tmp" "$(conf "$n")"
}

node_pid() { # node -> pid if alive
    local f=$DIR/node$1/garage.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start_node() {
    local n=$1
    node_pid "$n" >/dev/null && return 0
    # setsid + nohup: the node outlives this script's shell; its pid is kept for `down`.
    RUST_LOG=$LOG_FILTER setsid nohup "$GARAGE" -c "$(conf "$n")" server \
        >>"$DIR/node$n/garage.log" 2>&1 </dev/null &
    echo $! >"$DIR/node$n/garage.pid"
}

wait_for() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $what"
        sleep 1
    done
}

node_id() { # node -> "<hex id>@127.0.0.1:port"
    timeout 30 "$GARAGE" -c "$(conf "$1")" node id -q 2>/dev/null | tail -n 1
}

all_connected() {
    # Node 1 (which the CLI asks) sees all three nodes and none failed.
    [ "$(g status 2>/dev/null | grep -c '127.0.0.1:')" -ge 3 ] &&
        ! g status 2>/dev/null | grep -qi 'failed nodes'
}

connect_all() { # from node 1 to nodes 2 and 3
    local id
    for id in $(tail -n +2 "$DIR/node_ids"); do
        # Retried: a node just started may not listen yet.
        wait_for 60 "a connection to ${id#*@}" g node connect "$id"
    done
}

create_cluster() {
    log "first start: connecting nodes, building the layout, creating key and bucket"
    local n id ids=()
    for n in $NODES; do
        wait_for 60 "node $n's id" node_id "$n"
        ids+=("$(node_id "$n")")
    done
    printf '%s\n' "${ids[@]}" >"$DIR/node_ids"
    connect_all
    wait_for 60 "all three nodes connected" all_connected
    # One zone per node: with replication factor 3 Garage then keeps one copy per node, which is
    # what a 3-host deployment would do.
    for n in $NODES; do
        g layout assign -z "dc$n" -c 10G "${ids[$((n - 1))]%@*}" >/dev/null
    done
    g layout apply --version 1 >/dev/null
    g key create "$KEY_NAME" >"$DIR/key-create.out"
    local ak sk
    ak=$(sed -n 's/^Key ID:[[:space:]]*//p' "$DIR/key-create.out" | head -n 1)
    sk=$(sed -n 's/^Secret key:[[:space:]]*//p' "$DIR/key-create.out" | head -n 1)
    [ -n "$ak" ] && [ -n "$sk" ] || die "could not read the key from $DIR/key-create.out"
    # kura bench creates its bucket when missing, so the key may create buckets too.
    g key allow --create-bucket "$KEY_NAME" >/dev/null
    g bucket create "$BUCKET" >/dev/null
    g bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null
    printf '%s %s\n' "$ak" "$sk" >"$DIR/s3-keys.tmp"
    mv "$DIR/s3-keys.tmp" "$DIR/s3-keys"
    rm -f "$DIR/key-create.out"
    touch "$DIR/created"
}

s3_answers() {
    # Any HTTP status from the S3 port means the node serves (anonymous requests get 403).
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(s3_port 1)/") || return 1
    [ "$code" != 000 ]
}

cmd_up() {
    ensure_binary
    mkdir -p "$DIR"
    if [ ! -f "$DIR/rpc_secret" ]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/rpc_secret"
    fi
    local n
    for n in $NODES; do write_conf "$n"; done
    printf 'compression_level = %s\ndata_fsync = %s\nmetadata_fsync = %s\n' \
        "$COMPRESSION_TOML" "$DATA_FSYNC" "$META_FSYNC" >"$DIR/settings"
    for n in $NODES; do start_node "$n"; done
    if [ ! -f "$DIR/created" ]; then
        create_cluster
    else
        connect_all
    fi
    wait_for 60 "all three nodes connected" all_connected
    wait_for 60 "S3 on 127.0.0.1:$(s3_port 1)" s3_answers
    log "up: S3 at http://127.0.0.1:$(s3_port 1) (also $(s3_port 2), $(s3_port 3));" \
        "compression_level=$COMPRESSION_TOML data_fsync=$DATA_FSYNC metadata_fsync=$META_FSYNC"
}

cmd_down() {
    local n pid pids=()
    for n in $NODES; do
        if pid=$(node_pid "$n"); then
            kill "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    local deadline=$((SECONDS + 30))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if [ $SECONDS -ge $deadline ]; then
                log "pid $pid did not stop in 30s; sending KILL"
                kill -9 "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    done
    rm -f "$DIR"/node*/garage.pid
    log "stopped ${#pids[@]} node(s)"
    if [ "$WIPE" = 1 ]; then
        # The binary may live under DIR (the default): keep bin/, wipe the cluster.
        rm -rf "$DIR"/node* "$DIR"/rpc_secret "$DIR"/s3-keys "$DIR"/created "$DIR"/settings \
            "$DIR"/node_ids
        log "wiped the cluster in $DIR"
    fi
}

cmd_status() {
    [ -f "$(conf 1)" ] || die "no cluster in $DIR"
    local n pid
    for n in $NODES; do
        if pid=$(node_pid "$n"); then echo "node$n: running (pid $pid)"; else echo "node$n: stopped"; fi
    done
    echo "settings (from the last up):"
    sed 's/^/  /' "$DIR/settings" 2>/dev/null || true
    if node_pid 1 >/dev/null; then
        g status || true
        g layout show || true
    fi
}

cmd_env() {
    [ -f "$DIR/s3-keys" ] || die "no S3 key yet; run: garage.sh up"
    local ak sk
    read -r ak sk <"$DIR/s3-keys"
    echo "export AWS_ACCESS_KEY_ID=$ak AWS_SECRET_ACCESS_KEY=$sk AWS_ENDPOINT_URL=http://127.0.0.1:$(s3_port 1) AWS_REGION=garage AWS_DEFAULT_REGION=garage"
}

case "$CMD" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
esac

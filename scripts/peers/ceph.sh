#!/usr/bin/env bash
# One-host Ceph cluster (1 mon, 1 mgr, 3 BlueStore OSDs on files, RGW) for side-by-side
# benchmarks against Kura (issue 17). Every daemon runs as the current user from the data dir;
# nothing is installed as a systemd unit. Settings and their reasons: scripts/peers/README.md.
#
#   scripts/peers/ceph.sh [--dir DIR] [--media ssd|hdd|auto] up|down [--wipe]|status|env
set -euo pipefail

usage() {
    cat <<'EOF'
usage: ceph.sh [--dir DIR] [--media ssd|hdd|auto] [--osd-size BYTES] <command>

commands:
  up            install ceph + radosgw with apt if missing, create the cluster on first use,
                start mon, mgr, 3 OSDs and RGW on 127.0.0.1:7480, create the S3 user
  down [--wipe] stop every daemon of this cluster (by pid file); --wipe also deletes DIR
  status        `ceph -s`, pools and the daemons' pids
  env           print `export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_ENDPOINT_URL=...`

options (or environment):
  --dir DIR      data dir (CEPH_PEER_DIR; default $HOME/.cache/kura/peers/ceph)
  --media M      ssd (default), hdd or auto: the BlueStore tuning profile; this VM's disk says
                 rotational, so auto picks hdd (CEPH_PEER_MEDIA; applied at every up)
  --osd-size N   bytes per OSD block file, sparse (CEPH_PEER_OSD_BYTES; default 10 GiB)
EOF
}

DIR=${CEPH_PEER_DIR:-$HOME/.cache/kura/peers/ceph}
# cephx, as shipped. auth none is not offered: radosgw 16.2 failed to authenticate to the mon
# with it here (EACCES until its 300 s timeout) while the other daemons worked.
AUTH=cephx
MEDIA=${CEPH_PEER_MEDIA:-ssd}
OSD_BYTES=${CEPH_PEER_OSD_BYTES:-$((10 * 1024 * 1024 * 1024))}
NUM_OSDS=3
RGW_PORT=7480
RGW_NAME=client.rgw.kura
S3_USER=bench
# Pools RGW uses; created up front so that PG counts are ours, not the autoscaler's.
DATA_POOL_PGS=64

CMD=""
WIPE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=$2; shift 2 ;;
        --osd-size) OSD_BYTES=$2; shift 2 ;;
        --media) MEDIA=$2; shift 2 ;;
        --wipe) WIPE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        up|down|status|env) CMD=$1; shift ;;
        *) echo "ceph.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$CMD" ] || { usage >&2; exit 2; }
case "$MEDIA" in
    ssd|hdd) ENFORCE=$MEDIA ;;
    auto) ENFORCE=default ;;
    *) echo "ceph.sh: --media must be ssd, hdd or auto" >&2; exit 2 ;;
esac

CONF=$DIR/ceph.conf
export CEPH_CONF=$CONF

log() { echo "ceph.sh: $*" >&2; }
die() { log "$*"; exit 1; }

ensure_packages() {
    local missing=()
    command -v ceph-mon >/dev/null || missing+=(ceph)
    command -v radosgw >/dev/null || missing+=(radosgw)
    command -v uuidgen >/dev/null || missing+=(uuid-runtime)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} with apt"
        # --no-install-recommends: no ceph-volume/lvm, no dashboards; the daemons are enough.
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# ceph CLI with a timeout: a dead mon would otherwise make it retry forever.
c() { timeout 60 ceph --connect-timeout 30 "$@"; }

write_conf() { # rewritten at every up from the options; fsid and auth stay as created
    local fsid auth
    fsid=$(cat "$DIR/fsid")
    auth=$(cat "$DIR/auth")
    cat >"$CONF.tmp" <<EOF
# Written by scripts/peers/ceph.sh at every up; every setting is explained in
# scripts/peers/README.md.
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_network = 127.0.0.0/8
auth_cluster_required = $auth
auth_service_required = $auth
auth_client_required = $auth
keyring = $DIR/keys/\$cluster.\$name.keyring
run_dir = $DIR/run
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$name.asok
log_file = $DIR/log/\$name.log
crash_dir = $DIR/crash
# Replication 3 / min 2 like the issue's reference run; chooseleaf type 0 (osd) spreads the three
# replicas over the three OSDs of this one host instead of wanting three hosts.
osd_pool_default_size = 3
osd_pool_default_min_size = 2
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 16
osd_pool_default_pgp_num = 16
# PG counts fixed during a run: no autoscaler-driven splits in the middle of a benchmark.
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
# The shared disk is often more than 70% full; the default 30% warning would keep HEALTH_WARN on.
mon_data_avail_warn = 5

[mon]
mon_data = $DIR/mon/\$cluster-\$id

[mgr]
mgr_data = $DIR/mgr/\$cluster-\$id

[osd]
osd_data = $DIR/osd/\$cluster-\$id
osd_objectstore = bluestore
# BlueStore on a sparse file (osd_data/block, the default path) instead of a raw disk: the
# machine has one disk. Setting bluestore_block_path to that same path makes mkfs symlink it to
# itself, so it is left at its default.
bluestore_block_create = true
bluestore_block_size = $OSD_BYTES
bluestore_block_db_create = false
bluestore_block_wal_create = false
# 2 cores / 24 GiB shared with other processes: about 1 GiB per OSD.
osd_memory_target = 1073741824
# The VM's virtio disk reports rotational=1 although it syncs like flash (~73 us fdatasync), and
# BlueStore's HDD profile throttles hard (670000 cost per IO) and double-writes every write
# under 64 KiB through the RocksDB WAL. ssd is the profile an operator would pick here.
bluestore_debug_enforce_settings = $ENFORCE

[$RGW_NAME]
rgw_data = $DIR/rgw
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
EOF
    mv "$CONF.tmp" "$CONF"
}

daemon_pid() { # name -> pid if alive
    local f=$DIR/run/$1.pid
    [ -f "$f" ] || return 1
    local pid
    pid=$(cat "$f" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start_daemon() { # name, command...
    local name=$1; shift
    if daemon_pid "$name" >/dev/null; then
        return 0
    fi
    # Ceph daemons fork into the background themselves and write pid_file.
    "$@" || die "$name failed to start; see $DIR/log/$name.log"
}

create_cluster() {
    local fsid
    fsid=$(uuidgen)
    log "creating cluster $fsid in $DIR (auth $AUTH)"
    mkdir -p "$DIR"/{keys,run,log,crash,mon,mgr,osd,rgw}
    echo "$fsid" >"$DIR/fsid"
    echo "$AUTH" >"$DIR/auth"
    write_conf

    ceph-authtool --create-keyring "$DIR/keys/ceph.mon..keyring" --gen-key -n mon. \
        --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$DIR/keys/ceph.client.admin.keyring" --gen-key \
        -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' \
        --cap mgr 'allow *' >/dev/null
    cp "$DIR/keys/ceph.mon..keyring" "$DIR/keys/mon-mkfs.keyring"
    ceph-authtool "$DIR/keys/mon-mkfs.keyring" \
        --import-keyring "$DIR/keys/ceph.client.admin.keyring" >/dev/null

    monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' \
        "$DIR/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keys/mon-mkfs.keyring"
    cp "$DIR/keys/ceph.mon..keyring" "$DIR/keys/ceph.mon.a.keyring"
    start_daemon mon.a ceph-mon -i a
    c mon enable-msgr2 >/dev/null 2>&1 || true

    c auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
        -o "$DIR/keys/ceph.mgr.x.keyring"
    mkdir -p "$DIR/mgr/ceph-x"
    start_daemon mgr.x ceph-mgr -i x

    local i uuid id secret
    for i in $(seq 1 "$NUM_OSDS"); do
        uuid=$(uuidgen)
        secret=$(ceph-authtool --gen-print-key)
        id=$(echo "{\"cephx_secret\": \"$secret\"}" | c osd new "$uuid" -i - -n client.admin)
        mkdir -p "$DIR/osd/ceph-$id"
        ceph-authtool --create-keyring "$DIR/keys/ceph.osd.$id.keyring" -n "osd.$id" \
            --add-key "$secret" >/dev/null
        ceph-osd -i "$id" --mkfs --osd-uuid "$uuid" >"$DIR/log/osd.$id.mkfs.log" 2>&1 ||
            die "mkfs of osd.$id failed; see $DIR/log/osd.$id.mkfs.log"
        start_daemon "osd.$id" ceph-osd -i "$id"
    done

    c osd pool create default.rgw.buckets.data "$DATA_POOL_PGS" "$DATA_POOL_PGS" replicated >/dev/null
    c osd pool create default.rgw.buckets.index 16 16 replicated >/dev/null
    for p in default.rgw.buckets.data default.rgw.buckets.index; do
        c osd pool application enable "$p" rgw >/dev/null
    done

    c auth get-or-create "$RGW_NAME" mon 'allow rw' osd 'allow rwx' \
        -o "$DIR/keys/ceph.$RGW_NAME.keyring"
    touch "$DIR/created"
}

wait_for() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $what"
        sleep 1
    done
}

pgs_active() {
    # Every PG active (+clean or not: with 3 OSDs up they end up clean quickly).
    local out
    out=$(c pg stat 2>/dev/null) || return 1
    echo "$out" | grep -q ' pgs:' || return 1
    ! echo "$out" | grep -Eq 'peering|creating|unknown|activating|down|incomplete|inactive'
}

cmd_up() {
    ensure_packages
    mkdir -p "$DIR"
    if [ ! -f "$DIR/created" ]; then
        [ -z "$(ls -A "$DIR" 2>/dev/null)" ] ||
            die "$DIR holds a half-created cluster; run: ceph.sh --dir $DIR down --wipe"
        create_cluster
    else
        write_conf
        start_daemon mon.a ceph-mon -i a
        start_daemon mgr.x ceph-mgr -i x
        local f id
        for f in "$DIR"/osd/ceph-*; do
            id=${f##*/ceph-}
            start_daemon "osd.$id" ceph-osd -i "$id"
        done
    fi
    wait_for 120 "$NUM_OSDS OSDs up" osds_up
    wait_for 300 "all PGs active" pgs_active
    start_daemon "$RGW_NAME" radosgw -n "$RGW_NAME"
    wait_for 120 "RGW on 127.0.0.1:$RGW_PORT" curl -sf -o /dev/null "http://127.0.0.1:$RGW_PORT/"
    ensure_user
    # RGW creates its remaining pools when it starts: wait for their PGs too.
    wait_for 300 "RGW's pools active" pgs_active
    log "up: RGW at http://127.0.0.1:$RGW_PORT; credentials: ceph.sh env"
}

osds_up() {
    c osd stat -f json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["num_up_osds"] >= int(sys.argv[1]) else 1)' "$NUM_OSDS"
}

ensure_user() {
    [ -f "$DIR/s3-keys" ] && return 0
    local ak sk
    # 20-char access key, 40-char secret, the AWS shapes.
    ak=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Z0-9' | head -c 20)
    sk=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
    timeout 60 radosgw-admin -n client.admin user create --uid="$S3_USER" \
        --display-name="kura peer benchmark" --access-key="$ak" --secret="$sk" >/dev/null
    printf '%s %s\n' "$ak" "$sk" >"$DIR/s3-keys.tmp"
    mv "$DIR/s3-keys.tmp" "$DIR/s3-keys"
}

all_daemons() {
    local f
    for f in "$DIR"/run/*.pid; do
        [ -e "$f" ] || continue
        f=${f##*/}
        echo "${f%.pid}"
    done
}

cmd_down() {
    local name pid pids=()
    # All at once: SIGTERM lets each daemon shut down cleanly; order does not matter for a wipe
    # or a restart, and the data dir is kept unless --wipe.
    for name in $(all_daemons); do
        if pid=$(daemon_pid "$name"); then
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
    rm -f "$DIR"/run/*.pid
    log "stopped ${#pids[@]} daemon(s)"
    if [ "$WIPE" = 1 ]; then
        rm -rf "$DIR"
        log "wiped $DIR"
    fi
}

cmd_status() {
    [ -f "$CONF" ] || die "no cluster in $DIR"
    local name pid
    for name in $(all_daemons); do
        if pid=$(daemon_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
    done
    if daemon_pid mon.a >/dev/null; then
        c -s || true
        c osd pool ls detail || true
    fi
}

cmd_env() {
    [ -f "$DIR/s3-keys" ] || die "no S3 user yet; run: ceph.sh up"
    local ak sk
    read -r ak sk <"$DIR/s3-keys"
    echo "export AWS_ACCESS_KEY_ID=$ak AWS_SECRET_ACCESS_KEY=$sk AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
}

case "$CMD" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
esac

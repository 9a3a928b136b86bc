# The `cassandra-cluster` service of scripts/services: three Cassandra 5.0 nodes on 127.0.0.1,
# 127.0.0.2 and 127.0.0.3 (the same ports on each address: native 9043, storage 7013), one
# datacenter (`datacenter1`), every node a seed (any order of starts and restarts works), one
# token per node spread evenly over the ring.
# Opt-in: `scripts/services up` does not start it, `scripts/services up cassandra-cluster`
# does (the `cluster`-marked tests start and stop it themselves, see tests/cluster_support.py).
# It runs from the same cassandra-all classpath as the `cassandra` service, each node with its
# own data, commit log and logs under .services/cassandra-cluster/nodeN/.
#
# `up` is idempotent per node: it starts the nodes that are not running (after a SIGKILL or a
# stop, only those) and waits until a write at consistency ALL succeeds, i.e. until every node
# is up and sees the others. CASSANDRA_CLUSTER_START="2" starts only node 2 (the others stay as
# they are) and then waits for a write at QUORUM instead: how a test brings back one node of two
# that are down.
#
# Sourced by scripts/services after its Cassandra section: it reuses cassandra_java,
# cassandra_write_config and cassandra_jvm_opts, which read the CASS_* variables, HOST and
# CASSANDRA_HEAP -- overridden here with `local` (bash scoping is dynamic).
#
# Tunables (environment): CASSANDRA_CLUSTER_HEAP (default 512m per node), CASSANDRA_CLUSTER_START
# (the nodes `up` starts, default "1 2 3").
# shellcheck shell=bash

CLU_DIR="$STATE_DIR/cassandra-cluster"
CLU_HEAP="${CASSANDRA_CLUSTER_HEAP:-512m}"
CLU_NATIVE_PORT=9043
CLU_STORAGE_PORT=7013
CLU_NODES=(1 2 3)
read -r -a CLU_START <<<"${CASSANDRA_CLUSTER_START:-${CLU_NODES[*]}}"
#: one token per node: the Murmur3 ring split in three
CLU_TOKENS=(-9223372036854775808 -3074457345618258603 3074457345618258602)

cluster_node_host() { echo "127.0.0.$1"; }

# cassandra_cluster_scope N: the CASS_* paths of node N, for the caller's `local` copies.
cassandra_cluster_scope() {
    CASS_DIR="$CLU_DIR/node$1"
    CASS_CONF="$CASS_DIR/conf"
    CASS_PIDFILE="$CASS_DIR/cassandra.pid"
    CASS_LOGDIR="$CASS_DIR/logs"
    HOST="$(cluster_node_host "$1")"
    CASSANDRA_HEAP="$CLU_HEAP"
}

cassandra-cluster_packages() { cassandra_packages; }

cassandra_cluster_node_start() { # cassandra_cluster_node_start N
    local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
    cassandra_cluster_scope "$1"
    local n="$1" java seed
    if cassandra_running; then
        return 0
    fi
    java="$(cassandra_java)" || die "cassandra-cluster: no Java 17 runtime found"
    port_listening "$CLU_NATIVE_PORT" &&
        die "cassandra-cluster: $HOST:$CLU_NATIVE_PORT is taken by another process"
    cassandra_write_config "$CLU_NATIVE_PORT" "$CLU_STORAGE_PORT"
    seed="$(printf "127.0.0.%s:$CLU_STORAGE_PORT," "${CLU_NODES[@]}")"
    seed="${seed%,}"
    # The single-node configuration, made a member of a three-node ring: its own token, every
    # node a seed, hints on (a node that was down gets the writes it missed when it returns).
    sed -i \
        -e "s/^cluster_name: .*/cluster_name: sqla-audit-cluster/" \
        -e "s/^initial_token: .*/initial_token: ${CLU_TOKENS[$((n - 1))]}/" \
        -e "s/^      - seeds: .*/      - seeds: \"$seed\"/" \
        -e "s/^hinted_handoff_enabled: .*/hinted_handoff_enabled: true/" \
        -e "s/^# Written by scripts\/services: .*/# Written by scripts\/services: node $n of the three-node test cluster./" \
        "$CASS_CONF/cassandra.yaml"
    log "cassandra-cluster: starting node $n on $HOST:$CLU_NATIVE_PORT (storage port $CLU_STORAGE_PORT, heap $CASSANDRA_HEAP)"
    cassandra_launch cassandra-cluster "$java" 2
}

cassandra_cluster_start() {
    local n
    mkdir -p "$CLU_DIR"
    for n in "${CLU_START[@]}"; do
        [[ $n =~ ^[123]$ ]] || die "cassandra-cluster: no node '$n' (nodes: ${CLU_NODES[*]})"
        cassandra_cluster_node_start "$n"
    done
}

# A write at consistency CL (ALL or QUORUM) into a probe keyspace with replication factor 3:
# with ALL it succeeds only when all three nodes are up and agree on the ring.
cassandra_cluster_write_ok() { # cassandra_cluster_write_ok CL
    "$VENV/bin/python" - "$1" "$CLU_NATIVE_PORT" "$CASS_DC" "${CLU_NODES[@]}" <<'PY'
import sys
import warnings

warnings.simplefilter("ignore")
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy
from cassandra.query import SimpleStatement

level, port, dc, nodes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
profile = ExecutionProfile(
    load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=dc), request_timeout=10
)
cluster = Cluster(
    [f"127.0.0.{n}" for n in nodes], port=port, protocol_version=5, connect_timeout=3,
    execution_profiles={EXEC_PROFILE_DEFAULT: profile},
)
try:
    session = cluster.connect()
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS sqla_audit_cluster_probe WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    )
    session.execute(
        "CREATE TABLE IF NOT EXISTS sqla_audit_cluster_probe.ping (id int PRIMARY KEY, at timestamp)"
    )
    session.execute(
        SimpleStatement(
            "INSERT INTO sqla_audit_cluster_probe.ping (id, at) VALUES (1, toTimestamp(now()))",
            consistency_level=ConsistencyLevel.name_to_value[level],
        )
    )
    row = session.execute("SELECT release_version FROM system.local").one()
    print(row.release_version)
finally:
    cluster.shutdown()
PY
}

cassandra_cluster_ready() {
    local t0="$1" n version deadline level=ALL
    ((${#CLU_START[@]} == ${#CLU_NODES[@]})) || level=QUORUM
    deadline=$((SECONDS + CASSANDRA_START_TIMEOUT))
    for n in "${CLU_START[@]}"; do
        local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
        cassandra_cluster_scope "$n"
        while ! port_listening "$CLU_NATIVE_PORT"; do
            if ! cassandra_running; then
                print_log_tail "$CASS_LOGDIR/system.log" 60
                die "cassandra-cluster: node $n exited during startup"
            fi
            if ((SECONDS >= deadline)); then
                print_log_tail "$CASS_LOGDIR/system.log" 60
                die "cassandra-cluster: node $n not listening on $HOST:$CLU_NATIVE_PORT after ${CASSANDRA_START_TIMEOUT}s"
            fi
            sleep 1
        done
    done
    until version="$(cassandra_cluster_write_ok "$level" 2>/dev/null)"; do
        if ((SECONDS >= deadline)); then
            cassandra_cluster_write_ok "$level" 2>&1 | tail -n 3 >&2 || true
            die "cassandra-cluster: the nodes did not accept a write at consistency $level"
        fi
        sleep 2
    done
    write_env_fragment cassandra-cluster \
        "export SQLA_AUDIT_TEST_CASSANDRA_CLUSTER=127.0.0.1,127.0.0.2,127.0.0.3:$CLU_NATIVE_PORT" \
        "export SQLA_AUDIT_TEST_CASSANDRA_CLUSTER_STATE=$CLU_DIR"
    log "cassandra-cluster: ready, node(s) ${CLU_START[*]} up, writes at $level succeed on 127.0.0.1-3:$CLU_NATIVE_PORT (Cassandra $version, datacenter $CASS_DC) [$(elapsed "$t0")s]"
}

cassandra-cluster_down() {
    local n pid
    for n in "${CLU_NODES[@]}"; do
        local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
        cassandra_cluster_scope "$n"
        if cassandra_running; then
            pid="$(pid_of "$CASS_PIDFILE")"
            log "cassandra-cluster: stopping node $n (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for n in "${CLU_NODES[@]}"; do
        local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
        cassandra_cluster_scope "$n"
        pid="$(pid_of "$CASS_PIDFILE")"
        [[ -n $pid ]] || continue
        if ! wait_for "cassandra-cluster node $n stop" 90 pid_gone "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

cassandra-cluster_status() {
    local n pid rss line="" up=0
    for n in "${CLU_NODES[@]}"; do
        local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
        cassandra_cluster_scope "$n"
        if cassandra_running; then
            pid="$(pid_of "$CASS_PIDFILE")"
            rss="$(awk '/VmRSS/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null)"
            line+="  node $n $HOST pid $pid rss ${rss:-?};"
            up=$((up + 1))
        else
            line+="  node $n stopped;"
        fi
    done
    if ((up == 0)); then
        echo "stopped"
        return 1
    fi
    line="${line%;}"
    echo "running  :$CLU_NATIVE_PORT${line}"
    ((up == ${#CLU_NODES[@]}))
}

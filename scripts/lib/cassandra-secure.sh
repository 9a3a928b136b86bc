# The `cassandra-secure` service of scripts/services: a second single-node Cassandra that
# requires TLS (client certificates too) and password authentication, with role-based
# authorization. It runs from the same cassandra-all classpath as the `cassandra` service,
# on its own loopback address and ports, with its own data under .services/cassandra-secure/.
#
# At the first start (and when the certificates are about to expire) it generates a
# self-signed CA, a node certificate for its address and a client certificate with openssl,
# and the node's PKCS12 keystore and truststore with keytool. The superuser is Cassandra's
# default `cassandra` role.
#
# Sourced by scripts/services after its Cassandra section: it reuses cassandra_java,
# cassandra_write_config and cassandra_jvm_opts, which read the CASS_* variables, HOST and
# CASSANDRA_HEAP -- overridden here with `local` (bash scoping is dynamic).
#
# Tunables (environment): CASSANDRA_SECURE_HOST (default 127.0.0.4), CASSANDRA_SECURE_HEAP
# (default 512m).
# shellcheck shell=bash

SEC_HOST="${CASSANDRA_SECURE_HOST:-127.0.0.4}"
SEC_HEAP="${CASSANDRA_SECURE_HEAP:-512m}"
SEC_DIR="$STATE_DIR/cassandra-secure"
SEC_TLS="$SEC_DIR/tls"
SEC_SUPERUSER=cassandra
SEC_SUPERUSER_PASSWORD=cassandra
#: days the generated certificates are valid; they are made again when less than a day is left
SEC_CERT_DAYS=30

# cassandra_secure_scope: the CASS_* paths of the secure node, for the caller's `local` copies.
# Usage: local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP; cassandra_secure_scope
cassandra_secure_scope() {
    CASS_DIR="$SEC_DIR"
    CASS_CONF="$SEC_DIR/conf"
    CASS_PIDFILE="$SEC_DIR/cassandra.pid"
    CASS_LOGDIR="$SEC_DIR/logs"
    HOST="$SEC_HOST"
    CASSANDRA_HEAP="$SEC_HEAP"
}

cassandra-secure_packages() {
    cassandra_packages
    command -v openssl >/dev/null 2>&1 || echo openssl
}

# The certificates are missing, or expire within a day, or do not name the node's address.
cassandra_secure_certs_stale() {
    local f
    for f in ca.pem node.p12 truststore.p12 client.pem client.key store-password; do
        [[ -s $SEC_TLS/$f ]] || return 0
    done
    openssl x509 -in "$SEC_TLS/node.pem" -noout -checkend 86400 >/dev/null 2>&1 || return 0
    openssl x509 -in "$SEC_TLS/node.pem" -noout -ext subjectAltName 2>/dev/null |
        grep -qF "IP Address:$SEC_HOST" || return 0
    return 1
}

# cassandra_secure_sign NAME SUBJECT EXTENSIONS: NAME.key and NAME.pem signed by the CA.
cassandra_secure_sign() {
    local name="$1" subject="$2" extensions="$3"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$SEC_TLS/$name.key" \
        -out "$SEC_TLS/$name.csr" -subj "$subject" 2>/dev/null
    printf '%b' "$extensions" >"$SEC_TLS/$name.ext"
    openssl x509 -req -in "$SEC_TLS/$name.csr" -CA "$SEC_TLS/ca.pem" -CAkey "$SEC_TLS/ca.key" \
        -CAcreateserial -days "$SEC_CERT_DAYS" -sha256 -extfile "$SEC_TLS/$name.ext" \
        -out "$SEC_TLS/$name.pem" 2>/dev/null
    rm -f "$SEC_TLS/$name.csr" "$SEC_TLS/$name.ext"
}

# A fresh CA, node and client certificate, and the node's keystore and truststore.
cassandra_secure_make_certs() {
    local t0 password keytool
    t0="$(now)"
    keytool="$(dirname "$(readlink -f "$(cassandra_java)")")/keytool"
    rm -rf "$SEC_TLS"
    mkdir -p "$SEC_TLS"
    chmod 700 "$SEC_TLS"
    password="$(openssl rand -hex 16)"
    echo "$password" >"$SEC_TLS/store-password"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$SEC_TLS/ca.key" -out "$SEC_TLS/ca.pem" \
        -days "$SEC_CERT_DAYS" -sha256 -subj "/O=sqla-audit test/CN=sqla-audit test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    cassandra_secure_sign node "/O=sqla-audit test/CN=localhost" \
        "subjectAltName=IP:$SEC_HOST,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    cassandra_secure_sign client "/O=sqla-audit test/CN=sqla-audit client" \
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    openssl pkcs12 -export -name node -in "$SEC_TLS/node.pem" -inkey "$SEC_TLS/node.key" \
        -certfile "$SEC_TLS/ca.pem" -out "$SEC_TLS/node.p12" -passout "pass:$password"
    "$keytool" -importcert -noprompt -alias sqla-audit-test-ca -file "$SEC_TLS/ca.pem" \
        -keystore "$SEC_TLS/truststore.p12" -storetype PKCS12 -storepass "$password" >/dev/null 2>&1
    # The CA and client files are read by the tests (maybe as another user); the keys of the
    # CA and the node stay private.
    chmod 644 "$SEC_TLS/ca.pem" "$SEC_TLS/client.pem" "$SEC_TLS/client.key"
    chmod 755 "$SEC_TLS"
    chmod 600 "$SEC_TLS/ca.key" "$SEC_TLS/node.key" "$SEC_TLS/node.p12" "$SEC_TLS/store-password"
    log "cassandra-secure: made a CA, node and client certificate in $SEC_TLS [$(elapsed "$t0")s]"
}

cassandra_secure_start() {
    local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
    cassandra_secure_scope
    local java native storage password
    if cassandra_running; then
        return 0
    fi
    java="$(cassandra_java)" || die "cassandra-secure: no Java 17 runtime found"
    native="$(choose_port cassandra-secure 9142)"
    storage="$(choose_port cassandra-secure 7012 storage-port)"
    cassandra_secure_certs_stale && cassandra_secure_make_certs
    password="$(<"$SEC_TLS/store-password")"
    cassandra_write_config "$native" "$storage"
    # The shared single-node settings, then what makes this node the secure one.
    sed -i -e 's/^cluster_name: .*/cluster_name: sqla-audit-secure/' \
        -e 's/^authenticator: .*/authenticator: PasswordAuthenticator/' \
        -e 's/^authorizer: .*/authorizer: CassandraAuthorizer/' \
        -e 's/^# Written by scripts\/services: .*/# Written by scripts\/services: TLS + auth single node./' \
        "$CASS_CONF/cassandra.yaml"
    cat >>"$CASS_CONF/cassandra.yaml" <<EOF
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer
# No caching of roles and permissions: a GRANT applies to the next request.
roles_validity: 0ms
permissions_validity: 0ms
credentials_validity: 0ms
client_encryption_options:
  enabled: true
  optional: false
  keystore: $SEC_TLS/node.p12
  keystore_password: $password
  truststore: $SEC_TLS/truststore.p12
  truststore_password: $password
  store_type: PKCS12
  require_client_auth: true
EOF
    chmod 600 "$CASS_CONF/cassandra.yaml"
    log "cassandra-secure: starting on $HOST:$native (TLS, password auth; storage port $storage, heap $CASSANDRA_HEAP)"
    cassandra_launch cassandra-secure "$java" 2
}

# A CQL login as the superuser over TLS (client certificate, CA and host name checked).
cassandra_secure_cql_ok() {
    "$VENV/bin/python" - "$SEC_HOST" "$1" "$CASS_DC" "$SEC_TLS" "$SEC_SUPERUSER" \
        "$SEC_SUPERUSER_PASSWORD" <<'PY'
import ssl
import sys
import warnings

warnings.simplefilter("ignore")
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy

host, port, dc, tls, user, password = sys.argv[1:7]
context = ssl.create_default_context(cafile=f"{tls}/ca.pem")
context.load_cert_chain(f"{tls}/client.pem", f"{tls}/client.key")
profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=dc))
cluster = Cluster(
    [host], port=int(port), protocol_version=5, connect_timeout=3, ssl_context=context,
    auth_provider=PlainTextAuthProvider(username=user, password=password),
    execution_profiles={EXEC_PROFILE_DEFAULT: profile},
)
try:
    session = cluster.connect()
    row = session.execute("SELECT release_version FROM system.local").one()
    print(row.release_version)
finally:
    cluster.shutdown()
PY
}

cassandra_secure_ready() {
    local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
    cassandra_secure_scope
    local t0="$1" port version deadline
    port="$(recorded_port cassandra-secure)"
    deadline=$((SECONDS + CASSANDRA_START_TIMEOUT))
    while ! port_listening "$port"; do
        if ! cassandra_running; then
            print_log_tail "$CASS_LOGDIR/system.log" 60
            print_log_tail "$CASS_LOGDIR/stdout.log" 20
            die "cassandra-secure: the JVM exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            print_log_tail "$CASS_LOGDIR/system.log" 60
            die "cassandra-secure: not listening on $HOST:$port after ${CASSANDRA_START_TIMEOUT}s"
        fi
        sleep 1
    done
    # The superuser role is created a moment after the port opens.
    until version="$(cassandra_secure_cql_ok "$port" 2>/dev/null)"; do
        if ((SECONDS >= deadline)) || ! cassandra_running; then
            print_log_tail "$CASS_LOGDIR/system.log" 60
            cassandra_secure_cql_ok "$port" 2>&1 | tail -n 3 >&2 || true
            die "cassandra-secure: no CQL login over TLS on $HOST:$port"
        fi
        sleep 1
    done
    write_env_fragment cassandra-secure \
        "export SQLA_AUDIT_TEST_CASSANDRA_SECURE=$HOST:$port" \
        "export SQLA_AUDIT_TEST_CASSANDRA_SECURE_CA=$SEC_TLS/ca.pem" \
        "export SQLA_AUDIT_TEST_CASSANDRA_SECURE_CLIENT_CERT=$SEC_TLS/client.pem" \
        "export SQLA_AUDIT_TEST_CASSANDRA_SECURE_CLIENT_KEY=$SEC_TLS/client.key" \
        "export SQLA_AUDIT_TEST_CASSANDRA_SECURE_USERNAME=$SEC_SUPERUSER" \
        "export SQLA_AUDIT_TEST_CASSANDRA_SECURE_PASSWORD=$SEC_SUPERUSER_PASSWORD"
    log "cassandra-secure: ready on $HOST:$port (Cassandra $version, TLS with client certificates, password auth) [$(elapsed "$t0")s]"
}

cassandra-secure_down() {
    local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
    cassandra_secure_scope
    if cassandra_running; then
        local pid
        pid="$(pid_of "$CASS_PIDFILE")"
        log "cassandra-secure: stopping (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_for "cassandra-secure stop" 90 pid_gone "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

cassandra-secure_status() {
    local CASS_DIR CASS_CONF CASS_PIDFILE CASS_LOGDIR HOST CASSANDRA_HEAP
    cassandra_secure_scope
    if cassandra_running; then
        local pid rss
        pid="$(pid_of "$CASS_PIDFILE")"
        rss="$(awk '/VmRSS/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null)"
        echo "running  $HOST:$(recorded_port cassandra-secure)  pid $pid  rss ${rss:-?}  (TLS, auth)"
    else
        echo "stopped"
        return 1
    fi
}

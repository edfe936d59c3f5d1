#!/usr/bin/env bash
# Starts and stops one real Apache Cassandra node as a plain java process from the jars that
# scripts/cassandra/install.sh put in $MEDUSA_RS_TOOLS/cassandra/<version>/lib.
#
#   node.sh start    <nodedir> <N> [options]   generate <nodedir>/conf, start, wait for CQL
#   node.sh stop     <nodedir> [--timeout S] [--kill]
#                                              SIGTERM (Cassandra's shutdown hook drains, 2-15 s),
#                                              SIGKILL after S s (60); --kill: SIGKILL at once
#   node.sh status   <nodedir>                 running/stopped, pid, address, ports
#   node.sh nodetool <nodedir> <args...>       nodetool against this node's JMX port
#   node.sh cql-wait <nodedir> [--timeout S]   wait until the node answers CQL again
#
# Node N listens on 127.0.0.N (Linux routes all of 127/8 to lo): CQL on 127.0.0.N:9042,
# storage (gossip) on 127.0.0.N:7000, JMX on 127.0.0.1:(7199 + 100*(N-1)) (RMI on the same
# port), no JMX auth unless --jmx-auth. Nothing listens on another address.
# Everything the node writes is under <nodedir>: conf/ (cassandra.yaml, logback.xml), data/
# (data, commitlog, saved_caches, hints, cdc_raw), logs/ (system.log, gc.log, stdout.log),
# cassandra.pid, node.env (what nodetool and stop need). Data is kept across stop/start;
# conf/ is written anew at every start (unless --keep-conf).
#
# start options (defaults in brackets; each also has an environment variable):
#   --version V        Cassandra version, installed by install.sh [CASSANDRA_VERSION, 5.0.9]
#   --seeds A,B        seed addresses [CASSANDRA_SEEDS, the node's own address: a node whose
#                      seeds are all down refuses to start ("Unable to gossip with any peers")]
#   --cluster NAME     cluster_name [CASSANDRA_CLUSTER, medusa-rs-test]
#   --dc NAME          data centre name (GossipingPropertyFileSnitch) [CASSANDRA_DC, datacenter1]
#   --rack NAME        rack name [CASSANDRA_RACK, rack1]
#   --num-tokens K     vnodes [CASSANDRA_NUM_TOKENS, 16]; ignored with --initial-token
#   --initial-token T  explicit token(s), comma-separated (num_tokens = their count)
#                      [CASSANDRA_INITIAL_TOKEN]
#   --heap SIZE        -Xmx (-Xms = half of it, min 256m) [CASSANDRA_HEAP, 512m]
#   --format big|bti   SSTable format (5.0 only; 4.1 has only big) [CASSANDRA_SSTABLE_FORMAT, big]
#   --storage-compat M 5.0's storage_compatibility_mode: CASSANDRA_4 (5.0's default: SSTables
#                      of version nb), UPGRADING or NONE (version oa; bti needs it, so
#                      --format bti sets NONE) [CASSANDRA_STORAGE_COMPAT]
#   --timeout S        seconds to wait for CQL [CASSANDRA_START_TIMEOUT, 240]
#   --java HOME        JAVA_HOME to run with [CASSANDRA_JAVA_HOME, Java 17]
#   --auth             PasswordAuthenticator + CassandraAuthorizer (CQL user cassandra/cassandra)
#   --jmx-auth U:P     JMX password authentication with one user U (readwrite), password P
#                      (nodetool then needs -u U -pw P) [CASSANDRA_JMX_AUTH]
#   --keep-conf        keep an existing conf/cassandra.yaml and cassandra-rackdc.properties (what
#                      a restore wrote into them, e.g. initial_token) instead of generating them;
#                      the options above then only pick the JVM, ports and version
#                      [CASSANDRA_KEEP_CONF=1]
# Extra JVM options: CASSANDRA_JVM_EXTRA (word-split). At most CASSANDRA_MAX_NODES (3) nodes run
# on the machine at once (counted under a machine-wide lock, so two starts never take the last
# slot together); a start beyond that is refused, or waits up to CASSANDRA_SLOT_WAIT seconds
# (default 0) for another node to stop. Ports: CASSANDRA_NATIVE_PORT (9042),
# CASSANDRA_STORAGE_PORT (7000), CASSANDRA_JMX_PORT_BASE (7199).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
TOOLS="${MEDUSA_RS_TOOLS:-$REPO_ROOT/.tools}"

log() { printf '[cassandra/node] %s\n' "$*" >&2; }
die() { printf '[cassandra/node] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

# --- helpers shared by the subcommands ---

default_java_home() {
    if [ -n "${CASSANDRA_JAVA_HOME:-}" ]; then echo "$CASSANDRA_JAVA_HOME"; return; fi
    local d
    for d in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64; do
        [ -x "$d/bin/java" ] && { echo "$d"; return; }
    done
    local j; j="$(command -v java)" || die "no java found"
    dirname "$(dirname "$(readlink -f "$j")")"
}

java_major() { # $1 = JAVA_HOME
    "$1/bin/java" -XshowSettings:properties -version 2>&1 \
        | awk -F'= ' '/java.specification.version/ {print $2}' | sed 's/^1\.//'
}

lib_dir() { # $1 = version
    local lib="$TOOLS/cassandra/$1/lib"
    [ -f "$lib/cassandra-all-$1.jar" ] || die "cassandra $1 not installed in $lib (run scripts/cassandra/install.sh $1)"
    echo "$lib"
}

# The JPMS flags of Cassandra 5.0's conf/jvm17-server.options (used for Java >= 17, also for 4.1),
# and one more for JMX password authentication (--jmx-auth): without it JMXServerUtils fails
# with IllegalAccessException on com.sun.jmx.remote.security.JMXPluggableAuthenticator.
jpms_flags_17() {
    cat <<'EOF'
-Djdk.attach.allowAttachSelf=true
--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports=java.sql/java.sql=ALL-UNNAMED
--add-exports=java.base/java.lang.ref=ALL-UNNAMED
--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED
--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED
--add-opens=java.base/java.lang.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens=java.base/jdk.internal.math=ALL-UNNAMED
--add-opens=java.base/jdk.internal.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED
--add-opens=java.base/java.io=ALL-UNNAMED
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED
--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
--add-opens=java.base/java.lang=ALL-UNNAMED
--add-opens=java.base/java.util=ALL-UNNAMED
-Dio.netty.tryReflectionSetAccessible=true
-Dio.netty.allocator.useCacheForAllThreads=true
-Dio.netty.allocator.maxOrder=11
--add-exports=java.management/com.sun.jmx.remote.security=ALL-UNNAMED
EOF
}

# Cassandra 4.1 on Java 17: opens that jamm 0.3.2's MemoryMeter.measureDeep needs (found by
# starting 4.1.10; without the first one it fails with InaccessibleObjectException on
# java.util.concurrent.ConcurrentHashMap$KeySetView.value).
jpms_flags_41_extra() {
    cat <<'EOF'
--add-opens=java.base/java.util.concurrent=ALL-UNNAMED
--add-opens=java.base/java.nio=ALL-UNNAMED
--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
EOF
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

node_pid() { # $1 = nodedir; prints the pid if the process recorded there is alive and is a Cassandra
    local f="$1/cassandra.pid" pid
    [ -f "$f" ] || return 1
    pid="$(cat "$f")"
    pid_alive "$pid" || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'org.apache.cassandra.service.CassandraDaemon' || return 1
    echo "$pid"
}

load_env() { # $1 = nodedir
    [ -f "$1/node.env" ] || die "$1/node.env missing: not a node directory (start it first)"
    # shellcheck disable=SC1091
    . "$1/node.env"
}

port_open() { # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

run_nodetool() { # nodedir args...
    local dir="$1"; shift
    load_env "$dir"
    local -a creds=()
    [ -z "${NODE_JMX_USER:-}" ] || creds=(-u "$NODE_JMX_USER" -pw "$NODE_JMX_PASSWORD")
    CASSANDRA_VERSION="$NODE_VERSION" CASSANDRA_JAVA_HOME="$NODE_JAVA_HOME" \
        "$SCRIPT_DIR/nodetool" "${creds[@]}" -h 127.0.0.1 -p "$NODE_JMX_PORT" "$@"
}

# The node count and the launch happen under $TMPDIR/medusa-rs-cassandra-slots.lock: take_slot
# returns holding it once fewer than CASSANDRA_MAX_NODES nodes run (waiting up to
# CASSANDRA_SLOT_WAIT seconds), release_slot frees it once the new java process is running.
take_slot() {
    local max="${CASSANDRA_MAX_NODES:-3}" wait="${CASSANDRA_SLOT_WAIT:-0}" t0=$SECONDS running said=0
    exec {slot_fd}>"${TMPDIR:-/tmp}/medusa-rs-cassandra-slots.lock"
    while :; do
        flock "$slot_fd"
        running="$(pgrep -f 'org.apache.cassandra.service.CassandraDaemon' | wc -l || true)"
        [ "$running" -lt "$max" ] && return 0
        flock -u "$slot_fd"
        [ $((SECONDS - t0)) -lt "$wait" ] \
            || die "$running Cassandra nodes already running on this machine (limit CASSANDRA_MAX_NODES=$max, waited $((SECONDS - t0)) of CASSANDRA_SLOT_WAIT=$wait s)"
        [ "$said" = 1 ] || log "$running Cassandra nodes run already (limit $max): waiting up to $wait s for one to stop"
        said=1
        sleep 2
    done
}

release_slot() { # pid of the java process just launched
    local _
    for _ in $(seq 50); do
        tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q 'CassandraDaemon' && break
        sleep 0.1
    done
    flock -u "$slot_fd"
    exec {slot_fd}>&-
}

# Waits until CQL answers on the node: the native port accepts and nodetool statusbinary says
# running. Returns 1 if the process dies, 2 on timeout.
wait_cql() { # nodedir timeout pid
    local dir="$1" timeout="$2" pid="$3" t0=$SECONDS out
    while :; do
        pid_alive "$pid" || return 1
        if port_open "$NODE_ADDRESS" "$NODE_NATIVE_PORT"; then
            out="$(run_nodetool "$dir" statusbinary 2>/dev/null || true)"
            [ "$out" = "running" ] && return 0
        fi
        [ $((SECONDS - t0)) -lt "$timeout" ] || return 2
        sleep 0.5
    done
}

show_failure() { # nodedir
    log "---- first error of this run in $1/logs/stdout.log ----"
    grep -v '^CompileCommand' "$1/logs/stdout.log" 2>/dev/null \
        | grep -m1 -A12 -E '^(ERROR|Exception|Error)' >&2 || true
    log "---- last lines of $1/logs/system.log ----"
    tail -n 15 "$1/logs/system.log" 2>/dev/null >&2 || true
    log "---- last lines of $1/logs/stdout.log ----"
    grep -v '^CompileCommand' "$1/logs/stdout.log" 2>/dev/null | tail -n 15 >&2 || true
}

# --- start ---

write_yaml() { # uses the start_* variables
    local d="$start_dir/data" seeds_yaml auth_yaml tokens_yaml format_yaml
    seeds_yaml="$(echo "$start_seeds" | tr ',' '\n' | sed '/^$/d' | sed "s/\$/:$start_storage_port/" | paste -sd, -)"
    if [ -n "$start_initial_token" ]; then
        local count; count="$(echo "$start_initial_token" | tr ',' '\n' | sed '/^$/d' | wc -l)"
        tokens_yaml="num_tokens: $count
initial_token: $start_initial_token"
    else
        tokens_yaml="num_tokens: $start_num_tokens"
    fi
    if [ "$start_auth" = 1 ]; then
        auth_yaml="authenticator: PasswordAuthenticator
authorizer: CassandraAuthorizer
role_manager: CassandraRoleManager"
    else
        auth_yaml="authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer"
    fi
    format_yaml=""
    if [ "${start_version%%.*}" -ge 5 ]; then
        local compat="$start_storage_compat"
        [ -n "$compat" ] || { [ "$start_format" = bti ] && compat=NONE || compat=CASSANDRA_4; }
        [ "$start_format" = bti ] && [ "$compat" != NONE ] \
            && die "--format bti needs storage_compatibility_mode NONE (5.0 refuses bti in $compat)"
        format_yaml="storage_compatibility_mode: $compat
sstable:
  selected_format: $start_format"
    else
        [ "$start_format" = big ] || die "--format $start_format needs Cassandra 5.0 (4.1 writes only the big format)"
        [ -z "$start_storage_compat" ] || die "--storage-compat is a Cassandra 5.0 setting"
    fi
    # Key names are the 4.1+ ones (durations and sizes with units), which 4.1 and 5.0 both read.
    cat > "$start_dir/conf/cassandra.yaml" <<EOF
# Generated by scripts/cassandra/node.sh for node $start_n (Cassandra $start_version).
cluster_name: '$start_cluster'
$tokens_yaml
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: GossipingPropertyFileSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$seeds_yaml"
listen_address: $start_address
rpc_address: $start_address
storage_port: $start_storage_port
native_transport_port: $start_native_port
start_native_transport: true
auto_bootstrap: false
data_file_directories:
  - $d/data
commitlog_directory: $d/commitlog
saved_caches_directory: $d/saved_caches
hints_directory: $d/hints
cdc_raw_directory: $d/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
$auth_yaml
# small pools: two cores shared with builds
concurrent_reads: 4
concurrent_writes: 4
concurrent_counter_writes: 4
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
memtable_flush_writers: 1
native_transport_max_threads: 16
# tests create and drop keyspaces freely
auto_snapshot: true
materialized_views_enabled: true
sasi_indexes_enabled: true
$format_yaml
EOF
    cat > "$start_dir/conf/cassandra-rackdc.properties" <<EOF
dc=$start_dc
rack=$start_rack
EOF
}

write_logback() {
    cat > "$start_dir/conf/logback.xml" <<'EOF'
<!-- Generated by scripts/cassandra/node.sh: system.log (INFO), debug.log (DEBUG for
     org.apache.cassandra), stdout (WARN). -->
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.FileAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter"><level>INFO</level></filter>
    <file>${cassandra.logdir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <appender name="DEBUGLOG" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/debug.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <appender name="ASYNCDEBUGLOG" class="ch.qos.logback.classic.AsyncAppender">
    <queueSize>1024</queueSize>
    <discardingThreshold>0</discardingThreshold>
    <appender-ref ref="DEBUGLOG" />
  </appender>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter"><level>WARN</level></filter>
    <encoder><pattern>%-5level %date{HH:mm:ss.SSS} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG" />
    <appender-ref ref="STDOUT" />
    <appender-ref ref="ASYNCDEBUGLOG" />
  </root>
  <logger name="org.apache.cassandra" level="DEBUG"/>
</configuration>
EOF
}

cmd_start() {
    [ $# -ge 2 ] || usage
    start_dir="$1"; start_n="$2"; shift 2
    [[ "$start_n" =~ ^[0-9]+$ ]] && [ "$start_n" -ge 1 ] && [ "$start_n" -le 254 ] \
        || die "node index must be 1..254, got '$start_n'"
    start_version="${CASSANDRA_VERSION:-5.0.9}"
    start_seeds="${CASSANDRA_SEEDS:-127.0.0.$start_n}"
    start_cluster="${CASSANDRA_CLUSTER:-medusa-rs-test}"
    start_dc="${CASSANDRA_DC:-datacenter1}"
    start_rack="${CASSANDRA_RACK:-rack1}"
    start_num_tokens="${CASSANDRA_NUM_TOKENS:-16}"
    start_initial_token="${CASSANDRA_INITIAL_TOKEN:-}"
    start_heap="${CASSANDRA_HEAP:-512m}"
    start_format="${CASSANDRA_SSTABLE_FORMAT:-big}"
    start_storage_compat="${CASSANDRA_STORAGE_COMPAT:-}"
    start_timeout="${CASSANDRA_START_TIMEOUT:-240}"
    start_java="$(default_java_home)"
    start_auth=0
    start_jmx_auth="${CASSANDRA_JMX_AUTH:-}"
    start_keep_conf="${CASSANDRA_KEEP_CONF:-0}"
    while [ $# -gt 0 ]; do
        case "$1" in
            --version) start_version="$2"; shift 2 ;;
            --seeds) start_seeds="$2"; shift 2 ;;
            --cluster) start_cluster="$2"; shift 2 ;;
            --dc) start_dc="$2"; shift 2 ;;
            --rack) start_rack="$2"; shift 2 ;;
            --num-tokens) start_num_tokens="$2"; shift 2 ;;
            --initial-token) start_initial_token="$2"; shift 2 ;;
            --heap) start_heap="$2"; shift 2 ;;
            --format) start_format="$2"; shift 2 ;;
            --storage-compat) start_storage_compat="$2"; shift 2 ;;
            --timeout) start_timeout="$2"; shift 2 ;;
            --java) start_java="$2"; shift 2 ;;
            --auth) start_auth=1; shift ;;
            --jmx-auth) start_jmx_auth="$2"; shift 2 ;;
            --keep-conf) start_keep_conf=1; shift ;;
            *) die "unknown start option '$1'" ;;
        esac
    done
    case "$start_format" in big|bti) ;; *) die "--format must be big or bti" ;; esac
    [ -x "$start_java/bin/java" ] || die "no java at $start_java/bin/java"
    start_address="127.0.0.$start_n"
    start_native_port="${CASSANDRA_NATIVE_PORT:-9042}"
    start_storage_port="${CASSANDRA_STORAGE_PORT:-7000}"
    start_jmx_port=$(( ${CASSANDRA_JMX_PORT_BASE:-7199} + 100 * (start_n - 1) ))
    local lib; lib="$(lib_dir "$start_version")"
    local jmajor; jmajor="$(java_major "$start_java")"

    mkdir -p "$start_dir"
    start_dir="$(cd "$start_dir" && pwd)"
    if pid="$(node_pid "$start_dir")"; then
        die "node in $start_dir already running (pid $pid)"
    fi
    # Two cores are shared with builds: no fourth node (CASSANDRA_MAX_NODES, default 3).
    take_slot
    # Refuse to start over another process's ports: a half-started second node would confuse tests.
    port_open "$start_address" "$start_native_port" && die "$start_address:$start_native_port already in use"
    port_open "$start_address" "$start_storage_port" && die "$start_address:$start_storage_port already in use"
    port_open 127.0.0.1 "$start_jmx_port" && die "JMX port 127.0.0.1:$start_jmx_port already in use"

    mkdir -p "$start_dir/conf/triggers" "$start_dir/logs" \
        "$start_dir/data"/{data,commitlog,saved_caches,hints,cdc_raw}
    if [ "$start_keep_conf" = 1 ] && [ -f "$start_dir/conf/cassandra.yaml" ] \
        && [ -f "$start_dir/conf/cassandra-rackdc.properties" ]; then
        log "keeping $start_dir/conf/cassandra.yaml as it is (--keep-conf)"
    else
        write_yaml
    fi
    write_logback
    unzip -p "$lib/cassandra-all-$start_version.jar" META-INF/hotspot_compiler \
        > "$start_dir/conf/hotspot_compiler" 2>/dev/null || : > "$start_dir/conf/hotspot_compiler"

    local jamm; jamm="$(find "$lib" -maxdepth 1 -name 'jamm-*.jar' | head -n1)"
    [ -n "$jamm" ] || die "no jamm jar in $lib (the -javaagent Cassandra needs)"
    [[ "$start_heap" =~ ^[0-9]+[mMgG]$ ]] || die "--heap '$start_heap' is not a size like 512m or 1g"
    local heap_mb=$(( $(numfmt --from=iec "${start_heap^^}") / 1048576 ))
    [ "$heap_mb" -ge 128 ] || die "--heap $start_heap is too small (Cassandra needs at least 128m; 512m is the default)"
    # -Xms: half the heap, at least 256m, at most the heap. Cassandra mlockall()s its memory
    # at startup (as root this succeeds), so -Xms is resident from the start: RSS ~ Xms + 420 MiB.
    local xms=$(( heap_mb / 2 ))
    [ "$xms" -ge 256 ] || xms=256
    [ "$xms" -le "$heap_mb" ] || xms="$heap_mb"
    local -a jvm=(
        -ea -da:net.openhft...
        -XX:+UseThreadPriorities -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$start_dir/logs"
        -Xss256k -XX:+UseTLAB -XX:+ResizeTLAB -XX:+PerfDisableSharedMem
        -Djava.net.preferIPv4Stack=true
        "-Xms${xms}m" "-Xmx$start_heap"
        -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
        -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300
        -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1
        -XX:MaxDirectMemorySize=256m
        -XX:CompileCommand=quiet "-XX:CompileCommandFile=$start_dir/conf/hotspot_compiler"
        "-Xlog:gc=info,safepoint=info:file=$start_dir/logs/gc.log:time,uptime,pid,tid,level:filecount=3,filesize=10485760"
        "-javaagent:$jamm"
        -XX:OnOutOfMemoryError="kill -9 %p"
        # JMX on loopback only, no auth (what cassandra-env.sh does with LOCAL_JMX=yes)
        "-Dcassandra.jmx.local.port=$start_jmx_port"
        "-Dcom.sun.management.jmxremote.rmi.port=$start_jmx_port"
        -Djava.rmi.server.hostname=127.0.0.1
        # files
        "-Dcassandra.config=file://$start_dir/conf/cassandra.yaml"
        "-Dcassandra.storagedir=$start_dir/data"
        "-Dcassandra.logdir=$start_dir/logs"
        "-Dcassandra.triggers_dir=$start_dir/conf/triggers"
        "-Dcassandra-rackdc.properties=file://$start_dir/conf/cassandra-rackdc.properties"
        "-Dlogback.configurationFile=file://$start_dir/conf/logback.xml"
        "-Dcassandra-pidfile=$start_dir/cassandra.pid"
        -Dcassandra-foreground=yes
        # fast start for test rings
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=1000
        -Dcassandra.superuser_setup_delay_ms=0
        -Dcassandra.load_ring_state=true
    )
    # C1 only: starts ~2 s (of ~10-11) faster and compiles less on two shared cores; a test
    # node needs no peak throughput. CASSANDRA_FULL_JIT=1 keeps C2.
    [ "${CASSANDRA_FULL_JIT:-0}" = 1 ] || jvm+=(-XX:TieredStopAtLevel=1)
    rm -f "$start_dir/conf/jmxremote.password" "$start_dir/conf/jmxremote.access"
    if [ -n "$start_jmx_auth" ]; then
        [[ "$start_jmx_auth" =~ ^[A-Za-z0-9_.-]+:[^[:space:]]+$ ]] || die "--jmx-auth wants USER:PASSWORD"
        # 0400 as the JDK's own JMX agent demands ("Password file read access must be
        # restricted"); Cassandra's JMXServerUtils reads it through FileLoginModule, which
        # does not check (a 0644 file worked on 5.0.9), but a real node's file is 0400.
        (umask 077 && printf '%s %s\n' "${start_jmx_auth%%:*}" "${start_jmx_auth#*:}" \
            > "$start_dir/conf/jmxremote.password")
        chmod 0400 "$start_dir/conf/jmxremote.password"
        printf '%s readwrite\n' "${start_jmx_auth%%:*}" > "$start_dir/conf/jmxremote.access"
        jvm+=(-Dcom.sun.management.jmxremote.authenticate=true
              "-Dcom.sun.management.jmxremote.password.file=$start_dir/conf/jmxremote.password"
              "-Dcom.sun.management.jmxremote.access.file=$start_dir/conf/jmxremote.access")
    else
        jvm+=(-Dcom.sun.management.jmxremote.authenticate=false)
    fi
    if [ "$jmajor" -ge 11 ]; then   # only Java 17 was tried (no 11 here; 25 fails, see README)
        mapfile -t -O "${#jvm[@]}" jvm < <(jpms_flags_17)
        # 4.1 measures objects with jamm 0.3.2, which reflects into JDK fields: more --add-opens
        [ "${start_version%%.*}" -ge 5 ] || mapfile -t -O "${#jvm[@]}" jvm < <(jpms_flags_41_extra)
    fi
    if [ -n "${CASSANDRA_JVM_EXTRA:-}" ]; then
        # shellcheck disable=SC2206
        jvm+=(${CASSANDRA_JVM_EXTRA})   # last wins: a -D here overrides one above
    fi

    {
        printf 'NODE_VERSION=%q\n' "$start_version"
        printf 'NODE_INDEX=%q\n' "$start_n"
        printf 'NODE_ADDRESS=%q\n' "$start_address"
        printf 'NODE_NATIVE_PORT=%q\n' "$start_native_port"
        printf 'NODE_STORAGE_PORT=%q\n' "$start_storage_port"
        printf 'NODE_JMX_PORT=%q\n' "$start_jmx_port"
        printf 'NODE_JAVA_HOME=%q\n' "$start_java"
        if [ -n "$start_jmx_auth" ]; then
            printf 'NODE_JMX_USER=%q\n' "${start_jmx_auth%%:*}"
            printf 'NODE_JMX_PASSWORD=%q\n' "${start_jmx_auth#*:}"
        fi
    } > "$start_dir/node.env"
    rm -f "$start_dir/cassandra.pid"
    log "starting Cassandra $start_version (Java $jmajor) node $start_n on $start_address (CQL :$start_native_port, storage :$start_storage_port, JMX 127.0.0.1:$start_jmx_port) in $start_dir"
    local t0="$EPOCHREALTIME"
    # setsid: the node outlives this script and gets no signal meant for the caller's terminal.
    MALLOC_ARENA_MAX=4 setsid "$start_java/bin/java" "${jvm[@]}" \
        -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
        > "$start_dir/logs/stdout.log" 2>&1 < /dev/null {slot_fd}>&- &
    local pid=$!
    release_slot "$pid"
    echo "$pid" > "$start_dir/cassandra.pid"
    # node.env is complete now; wait_cql reads it through run_nodetool
    load_env "$start_dir"
    local rc=0
    wait_cql "$start_dir" "$start_timeout" "$pid" || rc=$?
    local elapsed; elapsed="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')"
    case "$rc" in
        0)  printf '%s\n' "$pid" > "$start_dir/cassandra.pid"
            log "node $start_n up: CQL on $start_address:$start_native_port after $elapsed s (pid $pid)"
            printf 'started node %s pid %s in %s s\n' "$start_n" "$pid" "$elapsed" ;;
        1)  show_failure "$start_dir"; die "node $start_n exited during startup after $elapsed s (see $start_dir/logs)" ;;
        *)  show_failure "$start_dir"
            kill -TERM "$pid" 2>/dev/null || true
            die "node $start_n: no CQL within ${start_timeout}s; sent SIGTERM to pid $pid (see $start_dir/logs)" ;;
    esac
}

# --- stop ---

cmd_stop() {
    [ $# -ge 1 ] || usage
    local dir="$1" timeout="${CASSANDRA_STOP_TIMEOUT:-60}" sig=TERM; shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --timeout) timeout="$2"; shift 2 ;;
            --kill) sig=KILL; shift ;;
            *) die "unknown stop option '$1'" ;;
        esac
    done
    local pid
    if ! pid="$(node_pid "$dir")"; then
        log "node in $dir not running"
        rm -f "$dir/cassandra.pid"
        return 0
    fi
    local t0=$SECONDS
    kill "-$sig" "$pid"
    while pid_alive "$pid"; do
        if [ $((SECONDS - t0)) -ge "$timeout" ]; then
            log "pid $pid still alive after ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.2
    done
    pid_alive "$pid" && die "pid $pid survived SIGKILL"
    rm -f "$dir/cassandra.pid"
    log "node in $dir stopped (pid $pid, $((SECONDS - t0)) s)"
}

cmd_status() {
    [ $# -ge 1 ] || usage
    local dir="$1" pid
    load_env "$dir"
    if pid="$(node_pid "$dir")"; then
        local rss; rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
        echo "running pid=$pid version=$NODE_VERSION address=$NODE_ADDRESS cql=$NODE_NATIVE_PORT storage=$NODE_STORAGE_PORT jmx=127.0.0.1:$NODE_JMX_PORT rss_kib=$rss"
    else
        echo "stopped version=$NODE_VERSION address=$NODE_ADDRESS"
        return 3
    fi
}

cmd_cql_wait() {
    [ $# -ge 1 ] || usage
    local dir="$1" timeout="${CASSANDRA_START_TIMEOUT:-240}"; shift
    [ "${1:-}" = --timeout ] && timeout="$2"
    load_env "$dir"
    local pid; pid="$(node_pid "$dir")" || die "node in $dir not running"
    local rc=0
    wait_cql "$dir" "$timeout" "$pid" || rc=$?
    [ "$rc" = 0 ] || die "node in $dir: no CQL within ${timeout}s (rc $rc)"
}

[ $# -ge 1 ] || usage
sub="$1"; shift
case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    nodetool) [ $# -ge 1 ] || usage; run_nodetool "$@" ;;
    cql-wait) cmd_cql_wait "$@" ;;
    -h|--help|help) usage ;;
    *) die "unknown subcommand '$sub' (start|stop|status|nodetool|cql-wait)" ;;
esac

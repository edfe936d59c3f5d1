#!/usr/bin/env bash
# Installs Apache Cassandra server jars (org.apache.cassandra:cassandra-all and its runtime
# dependencies) from Maven Central into $MEDUSA_RS_TOOLS/cassandra/<version>/lib, for
# scripts/cassandra/node.sh and scripts/cassandra/nodetool.
#
#   scripts/cassandra/install.sh [version...]      default: the pinned versions below
#
# Maven (mvn, on the standard machine) resolves a generated one-dependency pom with
# maven-dependency-plugin copy-dependencies; its local repository is
# $MEDUSA_RS_TOOLS/cassandra/m2 (override with CASSANDRA_MAVEN_REPO), so nothing outside .tools
# is written. Also a Python venv $MEDUSA_RS_TOOLS/cassandra/venv with cqlsh (PyPI, pins in
# scripts/cassandra/requirements.txt) for scripts/cassandra/cqlsh.
# Idempotent: a version (or the venv) whose marker matches is skipped (a re-run takes ~0 s).
set -euo pipefail

# Pinned: the newest 5.0 and 4.1 releases on Maven Central (checked 2026-12-07).
DEFAULT_VERSIONS=(5.0.9 4.1.10)
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MVN_TIMEOUT="${CASSANDRA_MVN_TIMEOUT:-900}"   # seconds, per version

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${MEDUSA_RS_TOOLS:-$REPO_ROOT/.tools}"
BASE="$TOOLS/cassandra"
M2="${CASSANDRA_MAVEN_REPO:-$BASE/m2}"

log() { printf '[cassandra/install] %s\n' "$*"; }
die() { printf '[cassandra/install] ERROR: %s\n' "$*" >&2; exit 1; }

command -v mvn >/dev/null 2>&1 || die "mvn not found (Maven is on the standard machine; apt-get install maven)"
command -v java >/dev/null 2>&1 || die "java not found"

versions=("$@")
[ "${#versions[@]}" -gt 0 ] || versions=("${DEFAULT_VERSIONS[@]}")

pom_for() {
    cat <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>medusa-rs.tools</groupId>
  <artifactId>cassandra-server-jars</artifactId>
  <version>$1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$1</version>
    </dependency>
  </dependencies>
</project>
POM
}

mkdir -p "$BASE"
start_all=$SECONDS
for v in "${versions[@]}"; do
    [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a release version: '$v' (want e.g. 5.0.9)"
    dest="$BASE/$v"
    marker="$dest/.medusa-rs-installed"
    want="cassandra-all $v $(pom_for "$v" | sha256sum | cut -d' ' -f1) $DEPENDENCY_PLUGIN"
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -f "$dest/lib/cassandra-all-$v.jar" ]; then
        log "cassandra $v up to date: $dest"
        continue
    fi
    t0=$SECONDS
    rm -f "$marker"
    rm -rf "${dest:?}/lib" "${dest:?}/lib.partial"
    mkdir -p "$dest"
    pom_for "$v" > "$dest/pom.xml"
    m2_before=$(du -sk "$M2" 2>/dev/null | cut -f1 || echo 0)
    log "mvn copy-dependencies org.apache.cassandra:cassandra-all:$v -> $dest/lib (timeout ${MVN_TIMEOUT}s)"
    if ! timeout "$MVN_TIMEOUT" mvn -B -q -f "$dest/pom.xml" -Dmaven.repo.local="$M2" \
            "$DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime \
            -DoutputDirectory="$dest/lib.partial" > "$dest/mvn.log" 2>&1; then
        tail -30 "$dest/mvn.log" >&2
        die "mvn failed or timed out for cassandra-all $v (full log: $dest/mvn.log)"
    fi
    [ -f "$dest/lib.partial/cassandra-all-$v.jar" ] || die "cassandra-all-$v.jar missing after mvn"
    ls "$dest/lib.partial"/jamm-*.jar >/dev/null 2>&1 || die "jamm jar (the -javaagent) missing after mvn"
    mv "$dest/lib.partial" "$dest/lib"
    m2_after=$(du -sk "$M2" | cut -f1)
    njars=$(find "$dest/lib" -name '*.jar' | wc -l)
    log "cassandra $v: $njars jars, lib $(du -sh "$dest/lib" | cut -f1), downloaded ~$(( (m2_after - m2_before) / 1024 )) MiB into $M2, $((SECONDS - t0)) s"
    printf '%s\n' "$want" > "$marker"
done
# --- cqlsh venv ---
VENV="$BASE/venv"
REQS="$(dirname "${BASH_SOURCE[0]}")/requirements.txt"
py_marker="$VENV/.medusa-rs-installed"
py_want="$(sha256sum < "$REQS" | cut -d' ' -f1) $(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
if [ -f "$py_marker" ] && [ "$(cat "$py_marker")" = "$py_want" ] && [ -x "$VENV/bin/cqlsh" ]; then
    log "cqlsh venv up to date: $VENV"
else
    t0=$SECONDS
    rm -f "$py_marker"
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    fi
    log "pip install -r scripts/cassandra/requirements.txt (cqlsh) into $VENV"
    timeout "$MVN_TIMEOUT" "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQS" \
        || die "pip install of cqlsh failed or timed out"
    "$VENV/bin/python" -c 'import cassandra, cqlshlib' || die "cqlsh venv broken after install"
    printf '%s\n' "$py_want" > "$py_marker"
    log "cqlsh venv ready in $((SECONDS - t0)) s"
fi
log "done in $((SECONDS - start_all)) s"

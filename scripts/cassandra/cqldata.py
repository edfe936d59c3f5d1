#!/usr/bin/env python3
"""Deterministic test data on real Cassandra nodes, through CQL (cassandra-driver), and a digest
of what the nodes serve. Used by the real-node scenarios (tests/it/cassandra.rs) to judge a
restore by the rows Cassandra returns, not by files.

    cqldata.py [--hosts 127.0.0.1,...] [--cl ONE] <command> [options]

Commands (output on stdout is one JSON document, diagnostics on stderr):
    schema [--dc NAME]            keyspaces rs1 (RF 1) and rs3 (RF 3, NetworkTopologyStrategy),
                                  a UDT, the tables below, a legacy 2i, SASI, and SAI on 5.0
    write --phase P [--rows N]    deterministic rows of phase P into every data table that exists
                                  (phase > 1 also updates and deletes rows of phase P-1)
    create TABLE / drop TABLE     create or drop one of the optional tables (late, dropped_early,
                                  dropped_late) in every keyspace
    digest                        per table: row count, per-phase counts, sha256 of the canonical
                                  rows of a full scan; per index: the answers of index queries;
                                  tables the schema does not know are {"absent": true}
    version                       release_version of the first host
    cql STATEMENT                 runs one statement (TRUNCATE, DROP, CREATE ...), waits for schema
                                  agreement

Tables per keyspace: users (collections, a frozen UDT, a 2i on email, SAI (5.0) or SASI (4.1)
on city, SASI on name), events (clustering columns, DESC order, range deletes), counters,
expiring (TTL 1 day, plus TTL 1 s rows that have expired before `write` returns), empty_table
(never written: a table without SSTables), and the optional late / dropped_early / dropped_late.
Reads and writes use --cl (writes also default to it). Every statement has a timeout.
"""

import argparse
import hashlib
import json
import sys
import time
from collections import namedtuple

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy
from cassandra.query import SimpleStatement
from cassandra.util import OrderedMapSerializedKey, SortedSet

KEYSPACES = ("rs1", "rs3")
CITIES = ["Lyon", "Porto", "Oslo", "Quito", "Lima", "Pune", "Kyiv", "Baku", "Riga", "Turku"]
DATA_TABLES = ("users", "events", "counters", "expiring", "empty_table", "late", "dropped_early", "dropped_late")
OPTIONAL = {
    "late": "CREATE TABLE IF NOT EXISTS {ks}.late (id int, c int, phase int, v text, PRIMARY KEY (id, c))",
    "dropped_early": "CREATE TABLE IF NOT EXISTS {ks}.dropped_early (id int PRIMARY KEY, phase int, v text)",
    "dropped_late": "CREATE TABLE IF NOT EXISTS {ks}.dropped_late (id int PRIMARY KEY, phase int, v text)",
}
Address = namedtuple("Address", ["street", "city", "zip"])


def log(msg):
    print(f"[cqldata] {msg}", file=sys.stderr, flush=True)


def connect(args):
    profile = ExecutionProfile(
        load_balancing_policy=RoundRobinPolicy(),
        consistency_level=ConsistencyLevel.name_to_value[args.cl],
        request_timeout=args.timeout,
    )
    cluster = Cluster(
        args.hosts.split(","),
        port=args.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=30,
        control_connection_timeout=30,
        max_schema_agreement_wait=60,
    )
    session = cluster.connect()
    session.default_fetch_size = 500
    return cluster, session


def major(session):
    row = session.execute("SELECT release_version FROM system.local").one()
    return row.release_version, int(row.release_version.split(".")[0])


def existing_tables(cluster, ks):
    meta = cluster.metadata.keyspaces.get(ks)
    return set(meta.tables) if meta else set()


# --- schema ---


def cmd_schema(cluster, session, args):
    version, v = major(session)
    for ks, rf in zip(KEYSPACES, (1, 3)):
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
            f"{{'class': 'NetworkTopologyStrategy', '{args.dc}': {rf}}}"
        )
        session.execute(f"CREATE TYPE IF NOT EXISTS {ks}.address (street text, city text, zip int)")
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {ks}.users (id int PRIMARY KEY, phase int, name text, email text, "
            f"city text, tags set<text>, prefs map<text, int>, scores list<int>, home frozen<address>)"
        )
        session.execute(f"CREATE INDEX IF NOT EXISTS users_email_2i ON {ks}.users (email)")
        if v >= 5:
            session.execute(f"CREATE INDEX IF NOT EXISTS users_city_sai ON {ks}.users (city) USING 'sai'")
        else:
            session.execute(
                f"CREATE CUSTOM INDEX IF NOT EXISTS users_city_sasi ON {ks}.users (city) "
                f"USING 'org.apache.cassandra.index.sasi.SASIIndex'"
            )
        session.execute(
            f"CREATE CUSTOM INDEX IF NOT EXISTS users_name_sasi ON {ks}.users (name) "
            f"USING 'org.apache.cassandra.index.sasi.SASIIndex'"
        )
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {ks}.events (user_id int, ts int, kind text, phase int, payload blob, "
            f"tags list<text>, PRIMARY KEY ((user_id), ts, kind)) WITH CLUSTERING ORDER BY (ts DESC, kind ASC)"
        )
        session.execute(f"CREATE TABLE IF NOT EXISTS {ks}.counters (id int PRIMARY KEY, hits counter, misses counter)")
        session.execute(f"CREATE TABLE IF NOT EXISTS {ks}.expiring (id int PRIMARY KEY, phase int, v text)")
        session.execute(f"CREATE TABLE IF NOT EXISTS {ks}.empty_table (id int PRIMARY KEY, v text)")
    cluster.control_connection.wait_for_schema_agreement(wait_time=60)
    print(json.dumps({"keyspaces": list(KEYSPACES), "version": version}))


def cmd_create(cluster, session, args):
    for ks in KEYSPACES:
        session.execute(OPTIONAL[args.table].format(ks=ks))
    cluster.control_connection.wait_for_schema_agreement(wait_time=60)
    print(json.dumps({"created": args.table}))


def cmd_drop(cluster, session, args):
    for ks in KEYSPACES:
        session.execute(f"DROP TABLE IF EXISTS {ks}.{args.table}")
    cluster.control_connection.wait_for_schema_agreement(wait_time=60)
    print(json.dumps({"dropped": args.table}))


# --- writes ---


def run_all(session, stmt, rows, concurrency=32):
    """Executes `stmt` for every parameter tuple of `rows`, `concurrency` at a time; raises on
    the first failure."""
    from cassandra.concurrent import execute_concurrent_with_args

    results = execute_concurrent_with_args(session, stmt, rows, concurrency=concurrency, raise_on_first_error=True)
    return len(results)


def cmd_write(cluster, session, args):
    p, n = args.phase, args.rows
    written = {}
    for ks in KEYSPACES:
        tables = existing_tables(cluster, ks)
        if not tables:
            continue
        cluster.register_user_type(ks, "address", Address)
        if "users" in tables:
            ins = session.prepare(
                f"INSERT INTO {ks}.users (id, phase, name, email, city, tags, prefs, scores, home) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            rows = []
            for i in range(n):
                uid = p * 10000 + i
                rows.append(
                    (
                        uid,
                        p,
                        f"user-{p}-{i}",
                        f"u{p}_{i}@example.com",
                        CITIES[(i * 7 + p) % len(CITIES)],
                        {f"t{(i + k) % 5}" for k in range(i % 4)},
                        {f"k{k}": i * k + p for k in range(i % 3)},
                        [i, p, i * p],
                        Address(f"{i} Main St", CITIES[i % len(CITIES)], 10000 + i),
                    )
                )
            written[f"{ks}.users"] = run_all(session, ins, rows)
            if p > 1:
                prev = [(p - 1) * 10000 + i for i in range(n)]
                upd = session.prepare(f"UPDATE {ks}.users SET name = ?, tags = tags + ? WHERE id = ?")
                run_all(session, upd, [(f"user-{p - 1}-{uid % 10000}-upd{p}", {f"upd{p}"}, uid) for uid in prev if uid % 10 == 0])
                dele = session.prepare(f"DELETE FROM {ks}.users WHERE id = ?")
                run_all(session, dele, [(uid,) for uid in prev if uid % 10 == 5])
                null = session.prepare(f"UPDATE {ks}.users SET email = null, prefs['k9'] = ? WHERE id = ?")
                run_all(session, null, [(p, uid) for uid in prev if uid % 10 == 7])
        if "events" in tables:
            ins = session.prepare(
                f"INSERT INTO {ks}.events (user_id, ts, kind, phase, payload, tags) VALUES (?, ?, ?, ?, ?, ?)"
            )
            rows = []
            for i in range(n // 3):
                for j in range(5):
                    payload = hashlib.sha256(f"{ks}/{p}/{i}/{j}".encode()).digest() * (1 + j)
                    rows.append((i, p * 1000 + j, ["click", "view", "buy"][j % 3], p, payload, [f"e{j}", f"p{p}"]))
            written[f"{ks}.events"] = run_all(session, ins, rows)
            if p > 1:
                rng = session.prepare(f"DELETE FROM {ks}.events WHERE user_id = ? AND ts > ? AND ts < ?")
                run_all(session, rng, [(i, (p - 1) * 1000, (p - 1) * 1000 + 3) for i in range(0, n // 3, 4)])
        if "counters" in tables:
            upd = session.prepare(f"UPDATE {ks}.counters SET hits = hits + ?, misses = misses + ? WHERE id = ?")
            # Counter updates are not idempotent: no retries, no speculative executions.
            for i in range(50):
                session.execute(upd, (p * i + 1, p, i))
            written[f"{ks}.counters"] = 50
        if "expiring" in tables:
            short = session.prepare(f"INSERT INTO {ks}.expiring (id, phase, v) VALUES (?, ?, ?) USING TTL 1")
            short_at = time.monotonic()
            run_all(session, short, [(p * 10000 + 5000 + i, p, f"gone-{p}-{i}") for i in range(20)])
            ins = session.prepare(f"INSERT INTO {ks}.expiring (id, phase, v) VALUES (?, ?, ?) USING TTL 86400")
            written[f"{ks}.expiring"] = run_all(session, ins, [(p * 10000 + i, p, f"ttl-{p}-{i}") for i in range(100)])
            # The TTL 1 s rows have expired before this command returns: no digest sees them.
            left = 2.1 - (time.monotonic() - short_at)
            if left > 0:
                time.sleep(left)
        for t in ("late", "dropped_early", "dropped_late"):
            if t not in tables:
                continue
            if t == "late":
                ins = session.prepare(f"INSERT INTO {ks}.late (id, c, phase, v) VALUES (?, ?, ?, ?)")
                rows = [(p * 1000 + i, c, p, f"late-{p}-{i}-{c}") for i in range(n // 10) for c in range(3)]
            else:
                ins = session.prepare(f"INSERT INTO {ks}.{t} (id, phase, v) VALUES (?, ?, ?)")
                rows = [(p * 1000 + i, p, f"{t}-{p}-{i}") for i in range(n // 10)]
            written[f"{ks}.{t}"] = run_all(session, ins, rows)
    print(json.dumps({"phase": p, "written": written}, sort_keys=True))


# --- digest ---


def canon(v):
    """A JSON-able value that is the same for equal CQL values, whatever the driver's types."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    if isinstance(v, (set, frozenset, SortedSet)):
        return ["set"] + sorted((canon(x) for x in v), key=lambda x: json.dumps(x, sort_keys=True))
    if isinstance(v, (dict, OrderedMapSerializedKey)):
        items = [[canon(k), canon(x)] for k, x in v.items()]
        return ["map"] + sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    if hasattr(v, "_fields"):  # UDT / named tuple
        return ["udt"] + [[f, canon(getattr(v, f))] for f in v._fields]
    if isinstance(v, (list, tuple)):
        return ["list"] + [canon(x) for x in v]
    return ["str", str(v)]


def scan(session, query, fix=None):
    stmt = SimpleStatement(query, fetch_size=500)
    rows = []
    for row in session.execute(stmt):
        d = row._asdict()
        if fix:
            d = fix(d)
        rows.append(json.dumps([[k, canon(d[k])] for k in sorted(d)], sort_keys=True))
    return sorted(rows)


def summary(rows):
    h = hashlib.sha256()
    for r in rows:
        h.update(r.encode())
        h.update(b"\n")
    return {"rows": len(rows), "sha256": h.hexdigest()}


def cmd_digest(cluster, session, args):
    _, v = major(session)
    out = {}
    for ks in KEYSPACES:
        tables = existing_tables(cluster, ks)
        for t in DATA_TABLES:
            key = f"{ks}.{t}"
            if t not in tables:
                out[key] = {"absent": True}
                continue
            if t == "expiring":
                # The remaining TTL changes with time: only whether one is set counts.
                rows = scan(
                    session,
                    f"SELECT id, phase, v, TTL(v) AS ttl FROM {ks}.expiring",
                    fix=lambda d: {**d, "ttl": d["ttl"] is not None and d["ttl"] > 0},
                )
            else:
                rows = scan(session, f"SELECT * FROM {ks}.{t}")
            d = summary(rows)
            if t in ("users", "expiring", "late", "dropped_early", "dropped_late"):
                phases = {}
                for r in rows:
                    for k, x in json.loads(r):
                        if k == "phase":
                            phases[str(x)] = phases.get(str(x), 0) + 1
                d["phases"] = dict(sorted(phases.items()))
            out[key] = d
        if "users" in tables:
            # The indexes answer as well: restored index files (2i, SASI, SAI) or rebuilt ones.
            answers = []
            for c in CITIES:
                ids = sorted(r.id for r in session.execute(f"SELECT id FROM {ks}.users WHERE city = %s", (c,)))
                answers.append(json.dumps(["city", c, ids]))
            for p in range(1, 6):
                for i in range(0, 400, 13):
                    rows = session.execute(f"SELECT id FROM {ks}.users WHERE email = %s", (f"u{p}_{i}@example.com",))
                    answers.append(json.dumps(["email", p, i, sorted(r.id for r in rows)]))
                ids = sorted(r.id for r in session.execute(f"SELECT id FROM {ks}.users WHERE name LIKE %s", (f"user-{p}-1%",)))
                answers.append(json.dumps(["name", p, ids]))
            out[f"{ks}.users#indexes"] = summary(sorted(answers))
    print(json.dumps(out, sort_keys=True, indent=1))


def cmd_cql(cluster, session, args):
    session.execute(args.statement)
    cluster.control_connection.wait_for_schema_agreement(wait_time=60)
    print(json.dumps({"executed": args.statement}))


def cmd_version(cluster, session, args):
    version, _ = major(session)
    print(json.dumps({"release_version": version}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9042)
    ap.add_argument("--cl", default="ONE", choices=["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("schema")
    s.add_argument("--dc", default="datacenter1")
    w = sub.add_parser("write")
    w.add_argument("--phase", type=int, required=True)
    w.add_argument("--rows", type=int, default=300)
    for name in ("create", "drop"):
        c = sub.add_parser(name)
        c.add_argument("table", choices=sorted(OPTIONAL))
    sub.add_parser("digest")
    sub.add_parser("version")
    q = sub.add_parser("cql")
    q.add_argument("statement")
    args = ap.parse_args()
    t0 = time.monotonic()
    cluster, session = connect(args)
    try:
        {
            "schema": cmd_schema,
            "write": cmd_write,
            "create": cmd_create,
            "drop": cmd_drop,
            "digest": cmd_digest,
            "cql": cmd_cql,
            "version": cmd_version,
        }[args.cmd](cluster, session, args)
    finally:
        cluster.shutdown()
    log(f"{args.cmd} on {args.hosts} at {args.cl} in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()

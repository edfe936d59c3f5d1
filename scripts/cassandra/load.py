#!/usr/bin/env python3
"""A steady CQL load on a real node and its latencies, for the live-node benchmark
(tests/it/cassandra/live_load.rs): what a backup running beside the node does to the clients.

    load.py [--hosts 127.0.0.1] fill --gib G       table bench.kv (id int PRIMARY KEY, v blob),
                                                   4 KiB random values until G GiB are written
    load.py [--hosts 127.0.0.1] run --rate R --seconds S --rows N --out FILE [--stop FILE]
                                                   R requests per second for S seconds (or until
                                                   the file --stop names exists), half reads
                                                   of random ids below N, half writes (overwrites
                                                   of random ids); every request's start time
                                                   (Unix s) and latency (ms) to FILE as JSON lines
                                                   [t, ms, ok]; a summary on stdout

Requests are issued on a fixed schedule (open loop): a slow answer does not delay the next
request, so queueing inside the node shows as latency instead of as a lower rate.
"""

import argparse
import json
import os
import sys
import time

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import RoundRobinPolicy

VALUE = 4096


def connect(args):
    profile = ExecutionProfile(
        load_balancing_policy=RoundRobinPolicy(),
        consistency_level=ConsistencyLevel.ONE,
        request_timeout=30,
    )
    cluster = Cluster(args.hosts.split(","), execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=30)
    return cluster, cluster.connect()


def cmd_fill(session, args):
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS bench WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS bench.kv (id int PRIMARY KEY, v blob)")
    insert = session.prepare("INSERT INTO bench.kv (id, v) VALUES (?, ?)")
    rows = int(args.gib * (1 << 30) / VALUE)
    t0 = time.monotonic()
    batch = 2000
    for start in range(0, rows, batch):
        params = [(i, os.urandom(VALUE)) for i in range(start, min(rows, start + batch))]
        for ok, res in execute_concurrent_with_args(session, insert, params, concurrency=64, raise_on_first_error=True):
            pass
    print(json.dumps({"rows": rows, "bytes": rows * VALUE, "seconds": round(time.monotonic() - t0, 1)}))


def cmd_run(session, args):
    import random

    read = session.prepare("SELECT v FROM bench.kv WHERE id = ?")
    write = session.prepare("INSERT INTO bench.kv (id, v) VALUES (?, ?)")
    rng = random.Random(7)
    payload = os.urandom(VALUE)
    samples = []
    pending = []

    def done(t, start, ok):
        samples.append((t, (time.monotonic() - start) * 1000.0, ok))

    interval = 1.0 / args.rate
    t_end = time.monotonic() + args.seconds
    next_at = time.monotonic()
    n = 0
    while next_at < t_end:
        if args.stop and n % 50 == 0 and os.path.exists(args.stop):
            break
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        wall, start = time.time(), time.monotonic()
        key = rng.randrange(args.rows)
        if n % 2 == 0:
            f = session.execute_async(read, (key,))
        else:
            f = session.execute_async(write, (key, payload))
        f.add_callbacks(
            lambda _r, w=wall, s=start: done(w, s, True), lambda _e, w=wall, s=start: done(w, s, False)
        )
        pending.append(f)
        n += 1
        next_at += interval
    deadline = time.monotonic() + 60
    while len(samples) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(args.out, "w") as out:
        for s in sorted(samples):
            out.write(json.dumps([round(s[0], 4), round(s[1], 3), s[2]]) + "\n")
    lat = sorted(s[1] for s in samples if s[2])
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None
    print(json.dumps({"sent": n, "answered": len(samples), "errors": sum(1 for s in samples if not s[2]),
                      "p50_ms": pick(0.5), "p99_ms": pick(0.99)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="127.0.0.1")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--gib", type=float, required=True)
    r = sub.add_parser("run")
    r.add_argument("--rate", type=float, required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--rows", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--stop", default=None)
    args = ap.parse_args()
    cluster, session = connect(args)
    try:
        {"fill": cmd_fill, "run": cmd_run}[args.cmd](session, args)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())

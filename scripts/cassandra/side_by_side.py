#!/usr/bin/env python3
"""One scripted sequence of every RPC of the package-less `Medusa` gRPC service (and the
standard health check), sent with Python Medusa 0.31's own generated stubs to one server, each
answer recorded in a normalised form, so that Python Medusa's gRPC server and medusa-rs' sidecar
can be compared call by call (tests/it/cassandra/side_by_side.rs).

Usage (with the Python of the tools venv, which has Medusa's stubs and grpcio):

    python side_by_side.py <host:port> <label> <out.json> [--mapping-dir DIR] [--node-name NAME]

Every call has a deadline, every wait is bounded. For each call it records
`{call, rpc, code, message_class, message, fields}`:

- `code`: the gRPC status code's name (`OK`, `NOT_FOUND`, ...);
- `message_class`: a short class of the status message (see `classify`), `""` for OK;
- `message`: the raw message (shown, never compared);
- `fields`: the response's fields, normalised so that what must differ between two servers
  (times, sizes, restore keys) reads as booleans or classes. Keys starting with `_` are shown
  but not compared (timing-dependent sequences, medusa-rs' added fields).

With `--mapping-dir`, each PrepareRestore records the mapping file the server wrote there
(`<dir>/<restoreKey>`) and removes it. `--node-name` is the name this server gives the node in
token maps and host maps (the pod name, or its address when it cannot resolve one): it reads
`<node>` everywhere, and one extra record ("the node's name in the token map") shows it.
"""

import argparse
import json
import re
import threading
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from medusa.service.grpc import medusa_pb2 as pb

CALL_TIMEOUT = 60.0
SYNC_BACKUP_TIMEOUT = 180.0
POLL_LIMIT = 240.0
STATUS = {v: k for k, v in pb.StatusType.items()}


# --- message classes ---------------------------------------------------------------------------

CLASSES = [
    (r"already exists", "already exists"),
    (r"no backup name supplied|must not be empty|name is empty|empty (backup )?name", "empty name"),
    (r"unable to get status for backup id", "name unknown to this process"),
    (r"has no node in datacenter|not in (the )?backup'?s? datacenters?", "datacenter not in backup"),
    (r"does not exist|not found|no such backup|no backup (named|called)", "not found"),
    (r"invalid|not a valid|must be", "invalid argument"),
    (r"permission denied", "permission denied"),
]


def classify(message):
    """A short class of a status message: the first rule of CLASSES that matches, else its first
    words with names, keys, numbers and quotes stripped."""
    if not message:
        return ""
    low = message.lower()
    for pattern, cls in CLASSES:
        if re.search(pattern, low):
            return cls
    low = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<key>", low)
    low = re.sub(r"sbs-[0-9a-z-]+", "<name>", low)
    low = re.sub(r"[0-9]+", "<n>", low)
    low = re.sub(r"[\"'<>()\[\]{}]", "", low)
    return " ".join(low.split()[:6])


# --- raw calls: the standard fields and medusa-rs' added ones (numbers >= 100) -------------------


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def added_fields(raw):
    """Fields numbered 100 and above (medusa-rs' additions), decoded by wire type."""
    out, i = {}, 0
    while i < len(raw):
        key, i = varint(raw, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(raw, i)
        elif wire == 2:
            n, i = varint(raw, i)
            value = raw[i:i + n].decode("utf-8", "replace")
            i += n
        elif wire == 1:
            value, i = int.from_bytes(raw[i:i + 8], "little"), i + 8
        elif wire == 5:
            value, i = int.from_bytes(raw[i:i + 4], "little"), i + 4
        else:
            break
        if number >= 100:
            out[number] = value
    return out


class Client:
    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=30)

    def call(self, method, request, response_class, timeout=CALL_TIMEOUT, service="Medusa"):
        """(code name, message, response or None, added fields)."""
        fn = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        try:
            raw = fn(request, timeout=timeout)
            return "OK", "", response_class.FromString(raw), added_fields(raw)
        except grpc.RpcError as e:
            return e.code().name, e.details() or "", None, {}


# --- normalised fields -------------------------------------------------------------------------


NODE_NAME = None


def node(host):
    """`<node>` for the name this server gives the node (see --node-name)."""
    return "<node>" if NODE_NAME is not None and host == NODE_NAME else host


def summary(b):
    """One backup summary in one line: name, status, type, finished/total nodes, the nodes
    (host, datacenter/rack, token count), whether objects, size and times are non-zero."""
    nodes = ", ".join(f"{node(n.host)} {n.datacenter}/{n.rack} {len(n.tokens)} tokens" for n in b.nodes)

    def nz(what, v):
        return f"{what}{'>0' if v > 0 else '=0'}"

    return (f"{b.backupName} {STATUS.get(b.status, str(b.status))} {b.backupType or '(no type)'} "
            f"{b.finishedNodes}/{b.totalNodes} [{nodes}] {nz('objects', b.totalObjects)} {nz('size', b.totalSize)} "
            f"{nz('start', b.startTime)} {nz('finish', b.finishTime)}")


def fields_of(msg, added):
    if msg is None:
        return {}
    name = type(msg).__name__
    f = {}
    if name == "BackupResponse":
        f = {"backupName": msg.backupName, "status": STATUS.get(msg.status, str(msg.status))}
    elif name == "BackupStatusResponse":
        f = {
            "status": STATUS.get(msg.status, str(msg.status)),
            "startTime set": bool(msg.startTime),
            "finishTime set": bool(msg.finishTime),
        }
        if 104 in added:
            f["_error"] = added[104]
    elif name == "DeleteBackupResponse":
        f = {"name": msg.name, "status": STATUS.get(msg.status, str(msg.status))}
    elif name == "GetBackupResponse":
        f = {"status": STATUS.get(msg.status, str(msg.status)), "backup": summary(msg.backup)}
    elif name == "GetBackupsResponse":
        f = {
            "overallStatus": STATUS.get(msg.overallStatus, str(msg.overallStatus)),
            "backups": [summary(b) for b in msg.backups],
        }
    elif name == "PurgeBackupsResponse":
        f = {
            "nbBackupsPurged": msg.nbBackupsPurged,
            "nbObjectsPurged": msg.nbObjectsPurged,
            "totalPurgedSize": msg.totalPurgedSize,
            "totalObjectsWithinGcGrace": msg.totalObjectsWithinGcGrace,
        }
        if 100 in added:
            f["_cleanupDeferred"] = added[100]
    elif name == "HealthCheckResponse":
        f = {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(msg.status)}
    return f


class Recorder:
    def __init__(self, client, mapping_dir):
        self.client = client
        self.mapping_dir = Path(mapping_dir) if mapping_dir else None
        self.calls = []

    def record(self, label, rpc, code, message, fields):
        rec = {
            "call": label,
            "rpc": rpc,
            "code": code,
            "message_class": classify(message),
            "message": message,
            "fields": fields,
        }
        self.calls.append(rec)
        shown = {k: v for k, v in fields.items() if k != "backups"}
        print(f"[{time.strftime('%H:%M:%S')}] {label}: {code} {message!r} {json.dumps(shown)[:300]}", flush=True)
        return rec

    def rpc(self, label, method, request, response_class, timeout=CALL_TIMEOUT, service="Medusa"):
        code, message, msg, added = self.client.call(method, request, response_class, timeout, service)
        return self.record(label, method, code, message, fields_of(msg, added))

    def poll(self, label, name, compare="all"):
        """BackupStatus(name) until it is neither IN_PROGRESS nor NOT_FOUND (bounded): the
        statuses seen, consecutive repeats collapsed, and the last answer. What is compared:
        `all`; `end` (only the last answer, the sequence depends on timing); `start` (only the
        sequence before the last answer, which depends on timing)."""
        t0 = time.monotonic()
        seen, last = [], None
        while True:
            code, message, msg, added = self.client.call("BackupStatus", pb.BackupStatusRequest(backupName=name),
                                                         pb.BackupStatusResponse)
            if code == "OK":
                state = STATUS.get(msg.status, str(msg.status))
                if added.get(104):
                    state += f" ({classify(added[104])})"
            else:
                state = f"{code} ({classify(message)})"
            if not seen or seen[-1] != state:
                seen.append(state)
            last = (code, message, msg, added)
            if code not in ("OK", "NOT_FOUND") or (code == "OK" and msg.status != pb.IN_PROGRESS):
                break
            if time.monotonic() - t0 > POLL_LIMIT:
                seen.append(f"still {state} after {POLL_LIMIT:.0f} s")
                break
            time.sleep(0.1 if time.monotonic() - t0 < 5 else 0.25)
        code, message, msg, added = last
        fields = fields_of(msg, added)
        if compare == "start":
            fields = {k if k.startswith("_") or k == "startTime set" else "_" + k: v for k, v in fields.items()}
            fields["seen before the last answer"] = " -> ".join(seen[:-1])
            fields["_seen"] = " -> ".join(seen)
        else:
            fields["seen" if compare == "all" else "_seen"] = " -> ".join(seen)
        fields["_polled"] = f"{time.monotonic() - t0:.1f} s"
        return self.record(label, "BackupStatus", code, message, fields)

    def settle(self, label, name, limit=90.0):
        """GetBackup(name) until its summary is no longer IN_PROGRESS (bounded)."""
        t0 = time.monotonic()
        while True:
            code, message, msg, added = self.client.call("GetBackup", pb.GetBackupRequest(backupName=name),
                                                         pb.GetBackupResponse)
            if code != "OK" or msg.status != pb.IN_PROGRESS or time.monotonic() - t0 > limit:
                break
            time.sleep(0.25)
        fields = fields_of(msg, added)
        fields["_waited"] = f"{time.monotonic() - t0:.1f} s"
        return self.record(label, "GetBackup", code, message, fields)

    def prepare(self, label, name, datacenter):
        key = str(uuid.uuid4())
        req = pb.PrepareRestoreRequest(backupName=name, datacenter=datacenter, restoreKey=key)
        code, message, msg, added = self.client.call("PrepareRestore", req, pb.PrepareRestoreResponse)
        fields = fields_of(msg, added)
        if self.mapping_dir is not None:
            path = self.mapping_dir / key
            if path.is_file():
                m = json.loads(path.read_text())
                hosts = {node(t): [node(h) for h in v.get("source", [])] for t, v in m.get("host_map", {}).items()}
                fields["mapping"] = f"in_place={m.get('in_place')} host_map={json.dumps(hosts, sort_keys=True)}"
                path.unlink()
            else:
                fields["mapping"] = "none written"
        return self.record(label, "PrepareRestore", code, message, fields)


def main():
    global NODE_NAME
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="host:port of the server")
    ap.add_argument("label", help="a name for this run")
    ap.add_argument("out", help="the JSON record to write")
    ap.add_argument("--mapping-dir", help="where the server writes PrepareRestore's mapping files")
    ap.add_argument("--node-name", help="the node's name in this server's token maps")
    args = ap.parse_args()
    target, label, out = args.target, args.label, args.out
    NODE_NAME = args.node_name
    t0 = time.monotonic()
    r = Recorder(Client(target), args.mapping_dir)
    FULL, DIFF = pb.BackupRequest.Mode.FULL, pb.BackupRequest.Mode.DIFFERENTIAL

    # Before any backup: an empty bucket, unknown names.
    r.rpc("GetBackups (empty bucket)", "GetBackups", pb.GetBackupsRequest(), pb.GetBackupsResponse)
    r.rpc("BackupStatus unknown", "BackupStatus", pb.BackupStatusRequest(backupName="sbs-nope"),
          pb.BackupStatusResponse)
    r.rpc("GetBackup unknown", "GetBackup", pb.GetBackupRequest(backupName="sbs-nope"), pb.GetBackupResponse)
    r.rpc("DeleteBackup unknown (fresh server)", "DeleteBackup", pb.DeleteBackupRequest(name="sbs-nope"),
          pb.DeleteBackupResponse)
    r.rpc("AsyncBackup empty name", "AsyncBackup", pb.BackupRequest(name="", mode=FULL), pb.BackupResponse)
    r.rpc("Backup (sync) empty name", "Backup", pb.BackupRequest(name="", mode=FULL), pb.BackupResponse)
    r.rpc("BackupStatus empty name", "BackupStatus", pb.BackupStatusRequest(backupName=""),
          pb.BackupStatusResponse)

    # A full backup, then what the listings say about it.
    r.rpc("AsyncBackup FULL sbs-1", "AsyncBackup", pb.BackupRequest(name="sbs-1", mode=FULL), pb.BackupResponse)
    r.poll("BackupStatus sbs-1 polled", "sbs-1")
    r.rpc("GetBackups (sbs-1)", "GetBackups", pb.GetBackupsRequest(), pb.GetBackupsResponse)
    r.rpc("GetBackup sbs-1", "GetBackup", pb.GetBackupRequest(backupName="sbs-1"), pb.GetBackupResponse)
    code, message, msg, _ = r.client.call("GetBackup", pb.GetBackupRequest(backupName="sbs-1"),
                                          pb.GetBackupResponse)
    hosts = [n.host for n in msg.backup.nodes] if msg is not None else []
    r.record("GetBackup sbs-1: the node's name in the token map", "GetBackup", code, message,
             {"host": ", ".join(hosts)})
    r.rpc("BackupStatus sbs-1", "BackupStatus", pb.BackupStatusRequest(backupName="sbs-1"),
          pb.BackupStatusResponse)
    r.rpc("DeleteBackup unknown (after a backup)", "DeleteBackup", pb.DeleteBackupRequest(name="sbs-nope"),
          pb.DeleteBackupResponse)

    # A differential backup.
    r.rpc("AsyncBackup DIFFERENTIAL sbs-2", "AsyncBackup", pb.BackupRequest(name="sbs-2", mode=DIFF),
          pb.BackupResponse)
    r.poll("BackupStatus sbs-2 polled", "sbs-2")
    r.rpc("GetBackup sbs-2", "GetBackup", pb.GetBackupRequest(backupName="sbs-2"), pb.GetBackupResponse)

    # The complete name sbs-1 again: whether IN_PROGRESS is seen before FAILED depends on timing.
    r.rpc("AsyncBackup FULL sbs-1 again (stored)", "AsyncBackup", pb.BackupRequest(name="sbs-1", mode=FULL),
          pb.BackupResponse)
    r.poll("BackupStatus sbs-1 polled after the re-send", "sbs-1", compare="end")
    r.rpc("GetBackup sbs-1 after the re-send", "GetBackup", pb.GetBackupRequest(backupName="sbs-1"),
          pb.GetBackupResponse)

    # Two concurrent AsyncBackup calls of one new name.
    answers = [None, None]
    barrier = threading.Barrier(2)

    def send(i):
        barrier.wait(timeout=10)
        answers[i] = r.client.call("AsyncBackup", pb.BackupRequest(name="sbs-3", mode=FULL), pb.BackupResponse)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=CALL_TIMEOUT + 15)
    both = sorted(
        f"{a[0]} {STATUS.get(a[2].status) if a[2] is not None else ''} ({classify(a[1])})".replace(" ()", "")
        if a is not None else "no answer" for a in answers)
    r.record("AsyncBackup FULL sbs-3 twice, concurrently", "AsyncBackup", "OK", "", {"answers": " + ".join(both)})
    # Which of Python's two threads is tracked, and which one loses the race for the snapshot
    # name, depends on timing: the end of the sequence is not compared.
    r.poll("BackupStatus sbs-3 polled", "sbs-3", compare="start")
    r.settle("GetBackup sbs-3 once no longer IN_PROGRESS", "sbs-3")

    # Retention with max_backup_age = max_backup_count = 0 (disabled).
    r.rpc("PurgeBackups", "PurgeBackups", pb.PurgeBackupsRequest(), pb.PurgeBackupsResponse)

    # PrepareRestore: unknown backup, a datacenter the backup lacks, none, the node's own.
    r.prepare("PrepareRestore unknown backup", "sbs-nope", "datacenter1")
    r.prepare("PrepareRestore datacenter not in the backup", "sbs-1", "dc-nope")
    r.prepare("PrepareRestore empty datacenter", "sbs-1", "")
    r.prepare("PrepareRestore sbs-1 datacenter1", "sbs-1", "datacenter1")

    # Deletion.
    r.rpc("DeleteBackup sbs-2", "DeleteBackup", pb.DeleteBackupRequest(name="sbs-2"), pb.DeleteBackupResponse)
    r.rpc("GetBackups (sbs-2 deleted)", "GetBackups", pb.GetBackupsRequest(), pb.GetBackupsResponse)

    # Synchronous backups: a new name with an invalid mode value (7), then a stored name.
    r.rpc("Backup (sync) sbs-5 mode 7", "Backup", pb.BackupRequest(name="sbs-5", mode=7), pb.BackupResponse,
          timeout=SYNC_BACKUP_TIMEOUT)
    r.rpc("GetBackup sbs-5", "GetBackup", pb.GetBackupRequest(backupName="sbs-5"), pb.GetBackupResponse)
    r.rpc("BackupStatus sbs-5", "BackupStatus", pb.BackupStatusRequest(backupName="sbs-5"),
          pb.BackupStatusResponse)
    r.rpc("Backup (sync) sbs-1 (stored)", "Backup", pb.BackupRequest(name="sbs-1", mode=FULL), pb.BackupResponse,
          timeout=SYNC_BACKUP_TIMEOUT)
    r.rpc("BackupStatus sbs-1 (end)", "BackupStatus", pb.BackupStatusRequest(backupName="sbs-1"),
          pb.BackupStatusResponse)

    # The standard health service beside it.
    r.rpc("Health.Check \"\"", "Check", health_pb2.HealthCheckRequest(service=""), health_pb2.HealthCheckResponse,
          service="grpc.health.v1.Health")
    r.rpc("Health.Check \"Medusa\"", "Check", health_pb2.HealthCheckRequest(service="Medusa"),
          health_pb2.HealthCheckResponse, service="grpc.health.v1.Health")

    r.rpc("GetBackups (end)", "GetBackups", pb.GetBackupsRequest(), pb.GetBackupsResponse)

    doc = {"label": label, "target": target, "seconds": round(time.monotonic() - t0, 1), "calls": r.calls}
    Path(out).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{label}: {len(r.calls)} calls in {doc['seconds']} s -> {out}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""End-to-end checks for dirsync on the docker-compose cluster (`just e2e`).

Needs the image dirsync:e2e (`just image` builds it). Seeds each node's folder
with distinct files, brings the cluster of docker-compose.yml up, runs the
checks below in order, prints a summary with each check's time, and ALWAYS
tears the cluster down and removes the scratch data (on success, failure,
Ctrl-C or SIGTERM). Each node's log is kept in target/e2e-logs/.

Checks: discovery by broadcast, convergence to the union of the seeds, live
create / modify / rename (file, folder) / delete (file, folder), a big random
file and a small edit of it travelling as a delta, a stopped node catching up
(deletes stay deleted), a node cut from the network converging after reconnect.

The host is the oracle: it keeps a model of the expected tree (files: path ->
size, mtime_ns, sha256; folders: path), built from what it writes itself, and waits
(bounded) until every node's folder equals the model. `.dirsync/` and
`.dirsync-tmp-*` are ignored (tools/dirsync_tree.py reads the trees, as for
bench/bench.py). After a failed check the later checks compare only the paths
they touch, so one bug does not hide the others.

What the nodes did is asked, never read from their logs: `dirsync status
/data --json` run in each container gives the node id, the connected peers
and the counters (connections, files and deltas received, content bytes,
protocol errors...). Only the panic check reads the logs (a panic has no
other trace).

Environment: E2E_DIR (scratch dir, default target/e2e), E2E_NET_PREFIX (first
three octets of the /24 subnet, default 172.28.213), E2E_TIMEOUT (seconds per
wait, default 90), E2E_BIG_MIB (default 100), E2E_PARTITION_SECS (how long
a node stays cut off, default 25), E2E_PROJECT (compose project,
default dirsync-e2e), E2E_KEEP=1 (leave cluster and data up, for debugging).
Python 3.11 standard library only.
"""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from dirsync_tree import DIR, Entry, entry_of, snapshot  # noqa: E402  (the shared tree reader)

COMPOSE_FILE = ROOT / "docker-compose.yml"
IMAGE = "dirsync:e2e"
PROJECT = os.environ.get("E2E_PROJECT", "dirsync-e2e")
SCRATCH = Path(os.environ.get("E2E_DIR") or ROOT / "target" / "e2e").resolve()
LOG_DIR = ROOT / "target" / "e2e-logs"
NET_PREFIX = os.environ.get("E2E_NET_PREFIX", "172.28.213")
TIMEOUT = float(os.environ.get("E2E_TIMEOUT", "90"))
BIG_MIB = int(os.environ.get("E2E_BIG_MIB", "100"))
PARTITION_SECS = float(os.environ.get("E2E_PARTITION_SECS", "25"))  # > dirsync's 20 s keep-alive
KEEP = os.environ.get("E2E_KEEP") == "1"
MIB = 1 << 20
DELTA_LIMIT = 0.05  # the edit must cost less than this fraction of the file

COMPOSE = (["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]) + [
    "-p", PROJECT, "-f", str(COMPOSE_FILE)]
ENV = dict(os.environ, E2E_DIR=str(SCRATCH), E2E_NET_PREFIX=NET_PREFIX)


class Failure(Exception):
    """A check failed; the message names the node and path."""


def sh(*args, check=True, timeout=180, merge=False) -> str:
    """Run a command without stdin; return its stdout (with stderr if merge)."""
    p = subprocess.run(args, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                       timeout=timeout, text=True, errors="replace")
    if check and p.returncode != 0:
        raise Failure(f"`{' '.join(args)}` exited {p.returncode}: {(p.stderr or p.stdout).strip()[-1500:]}")
    return p.stdout


# ---------------------------------------------------------------- trees ----

def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def scoped(tree: dict, scope) -> dict:
    """Keep the paths whose top-level name matches one of the scope's patterns."""
    if scope is None:
        return tree
    return {p: e for p, e in tree.items() if any(fnmatch(p.split("/")[0], pat) for pat in scope)}


def fmt_ns(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def differences(expected: dict, actual: dict, limit=6) -> list[str]:
    out = []
    for p in sorted(expected.keys() | actual.keys()):
        e, a = expected.get(p), actual.get(p)
        if e == a:
            continue
        if a is None:
            out.append(f"missing {p!r}")
        elif e is None:
            out.append(f"unexpected {p!r} ({a.kind}" + (f", {a.size} B)" if a.kind == "file" else ")"))
        elif e.kind != a.kind:
            out.append(f"{p!r} is a {a.kind}, expected a {e.kind}")
        elif e.digest != a.digest:
            out.append(f"content differs {p!r} ({a.size} B, expected {e.size} B)")
        else:
            out.append(f"mtime differs {p!r}: {fmt_ns(a.mtime_ns)}, expected {fmt_ns(e.mtime_ns)}")
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def added(after: dict, before: dict, key: str) -> int:
    """How much counter `key` grew between two readings of a node's counters."""
    return after[key] - before[key]


# -------------------------------------------------------------- cluster ----

class Cluster:
    def __init__(self):
        services = sh(*COMPOSE, "config", "--services").split()
        self.nodes = sorted(services, key=lambda s: (len(s), s))
        self.cid: dict[str, str] = {}
        self.model: dict[str, Entry] = {}  # the expected tree
        self.conflict_loser = None  # (node, entry, mtime) of the seeded conflict's older side
        self.scope = None  # after a failure: only compare the current check's paths
        self.degraded = False

    def dir(self, node) -> Path:
        return SCRATCH / node

    # ----- docker plumbing
    def prepare(self):
        try:
            sh("docker", "image", "inspect", IMAGE)
        except Failure:
            raise Failure(f"image {IMAGE} is missing: run `just e2e` (or `just image`) to build it")
        sh(*COMPOSE, "down", "-v", "--remove-orphans", "-t", "1", check=False)  # leftovers
        shutil.rmtree(SCRATCH, ignore_errors=True)
        for n in self.nodes:
            self.dir(n).mkdir(parents=True)

    def up(self):
        sh(*COMPOSE, "up", "-d", "--no-build", timeout=300)
        self.cid = {n: sh(*COMPOSE, "ps", "-q", n).strip() for n in self.nodes}
        missing = [n for n, c in self.cid.items() if not c]
        if missing:
            raise Failure(f"no container for {', '.join(missing)}")
        return f"{len(self.nodes)} nodes on {NET_PREFIX}.0/24"

    def teardown(self):
        """Save the node logs, remove the cluster and the scratch data; never raises."""
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        steps = [("save logs", self.save_logs)]
        if KEEP:
            print(f"E2E_KEEP=1: cluster {PROJECT} and {SCRATCH} left in place")
        else:
            steps += [("compose down", lambda: sh(*COMPOSE, "down", "-v", "--remove-orphans", timeout=300)),
                      ("remove scratch data", lambda: SCRATCH.exists() and shutil.rmtree(SCRATCH))]
        for what, step in steps:
            try:
                step()
            except Exception as e:
                print(f"warning: tear down: {what} failed: {e}", file=sys.stderr)

    def save_logs(self):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        for n, c in self.cid.items():
            (LOG_DIR / f"{n}.log").write_text(sh("docker", "logs", c, check=False, merge=True))

    def log_lines(self, node) -> list[str]:
        return sh("docker", "logs", self.cid[node], check=False, merge=True).splitlines()

    def status(self, node) -> dict:
        """`dirsync status /data --json` in the node's container: its id, its
        peers, its counters (src/node/status.rs). Raises Failure if it does
        not answer."""
        return json.loads(sh("docker", "exec", self.cid[node], "/dirsync", "status", "/data", "--json", timeout=30))

    def counters(self) -> dict:
        """Every node's counters now: node -> {counter: value}."""
        return {n: self.status(n)["counters"] for n in self.nodes}

    def container_file(self, node, path) -> bytes:
        """A file in the node's container (`docker cp`: the state folder is
        the container user's alone)."""
        p = subprocess.run(["docker", "cp", f"{self.cid[node]}:{path}", "-"], env=ENV, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if p.returncode != 0:
            raise Failure(f"docker cp {node}:{path} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tar:
            member = next(m for m in tar.getmembers() if m.isfile())
            return tar.extractfile(member).read()

    def tail(self, node, n=8) -> str:
        lines = [ANSI.sub("", l) for l in self.log_lines(node)[-n:]] or ["(no log output)"]
        return "\n".join("      | " + l for l in lines)

    def assert_running(self, nodes):
        states = sh("docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                    *(self.cid[n] for n in nodes)).splitlines()
        for n, state in zip(nodes, states):
            status, code = state.split()
            if status != "running":
                raise Failure(f"{n}: container is {status} (exit code {code}); last log lines:\n"
                              + self.tail(n))

    # ----- waiting for convergence
    def wait_converged(self, nodes=None, timeout=TIMEOUT, model=None):
        """Wait until every node's tree equals the model (within self.scope)."""
        nodes = nodes or self.nodes
        want = scoped(model if model is not None else self.model, self.scope)
        deadline, next_alive = time.monotonic() + timeout, 0.0
        while True:
            diffs = {}
            for n in nodes:
                d = differences(want, scoped(snapshot(self.dir(n)), self.scope))
                if d:
                    diffs[n] = d
            if not diffs:
                return
            if time.monotonic() > next_alive:
                self.assert_running(nodes)
                next_alive = time.monotonic() + 2
            if time.monotonic() > deadline:
                lines = [f"  {n}: " + "; ".join(d) + "\n    last log lines:\n" + self.tail(n)
                         for n, d in diffs.items()]
                raise Failure(f"not converged after {timeout:.0f}s "
                              f"({len(diffs)}/{len(nodes)} nodes differ from the expected tree):\n"
                              + "\n".join(lines))
            time.sleep(0.5)

    # ----- host-side file operations on one node's folder, mirrored in the model
    def write(self, node, rel, data: bytes, mtime_ns=None):
        p = self.dir(node) / rel
        self.mkdir(node, Path(rel).parent.as_posix())
        p.write_bytes(data)
        if mtime_ns is not None:
            os.utime(p, ns=(mtime_ns, mtime_ns))
        self.model[rel] = entry_of(p)

    def mkdir(self, node, rel):
        (self.dir(node) / rel).mkdir(parents=True, exist_ok=True)
        self.model.update({d.as_posix(): DIR for d in [Path(rel), *Path(rel).parents] if d != Path(".")})

    def delete(self, node, rel):
        p = self.dir(node) / rel
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        self.model = {k: v for k, v in self.model.items() if not under(k, rel)}

    def rename(self, node, src, dst):
        os.rename(self.dir(node) / src, self.dir(node) / dst)
        self.model = {k: v for k, v in self.model.items() if not under(k, src)}
        self.model.update({k: v for k, v in snapshot(self.dir(node)).items() if under(k, dst)})


# --------------------------------------------------------------- checks ----

T0 = 1_700_000_000_123_456_789  # seed mtimes, nanosecond precision on purpose


def seed(c: Cluster):
    """Distinct files (nested folders, an empty file, a non-ASCII name) per node,
    plus one path seeded on two nodes with different contents: the newer wins,
    and the older is kept as a conflict copy (two unknown histories that meet
    count as concurrent edits; docs/CONFLICTS.md)."""
    for i, n in enumerate(c.nodes, 1):
        t = T0 + i * 1_000_000_007
        c.write(n, f"seed-{n}/hello.txt", f"hello from {n}\n".encode(), t)
        c.write(n, f"seed-{n}/sub/deeper/data.bin", os.urandom(64 * 1024), t + 1)
        c.write(n, f"seed-{n}/sub/empty.txt", b"", t + 2)
        c.write(n, f"seed-{n}/spaces and ünïcode {i}.txt", b"x" * (1000 + i), t + 3)
    a, b = c.nodes[0], c.nodes[1]
    c.write(a, "shared/conflict.txt", f"older version from {a}\n".encode(), T0)
    older = c.model["shared/conflict.txt"]
    c.write(b, "shared/conflict.txt", f"newer version from {b}\n".encode(), T0 + 5 * 10**9)
    assert c.model["shared/conflict.txt"] != older  # the model keeps the newer one
    c.conflict_loser = (a, older, T0)


def check_discovery(c: Cluster):
    """Every node is connected to every other (the peers in its status), and
    learnt them from announcements (its `discovered` counter): the nodes
    know no addresses but by broadcast."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        problems = []
        try:
            status = {n: c.status(n) for n in c.nodes}
        except Failure as e:  # not answering yet: still starting
            status, problems = {}, [str(e)]
        ids = {n: s["node"] for n, s in status.items()}
        for n, s in status.items():
            peers = {p["id"] for p in s["peers"]}
            missing = [m for m in c.nodes if m != n and ids[m] not in peers]
            if missing:
                problems.append(f"{n} (id {ids[n]}): not connected to "
                                + ", ".join(f"{m} (id {ids[m]})" for m in missing)
                                + f"; connected to {sorted(peers) or 'nobody'}")
            if s["counters"]["discovered"] < len(c.nodes) - 1:
                problems.append(f"{n}: learnt {s['counters']['discovered']} nodes from announcements, "
                                f"expected {len(c.nodes) - 1}")
        if not problems:
            return "ids " + ", ".join(f"{n}={ids[n]}" for n in c.nodes)
        c.assert_running(c.nodes)
        if time.monotonic() > deadline:
            raise Failure(f"after {TIMEOUT:.0f}s:\n  " + "\n  ".join(problems))
        time.sleep(1)


def check_union(c: Cluster):
    # The loser's copy is named by its mtime (UTC), the loser's device id,
    # which its node keeps in its state folder, and 8 hex digits of its
    # content's blake3 hash (found on disk: the model hashes with sha256).
    loser, older, mtime_ns = c.conflict_loser
    device = c.container_file(loser, "/data/.dirsync/device").decode().strip()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(mtime_ns // 10**9))
    pattern = re.compile(rf"conflict\.sync-conflict-{stamp}-{device[:8]}-[0-9a-f]{{8}}\.txt")
    deadline = time.monotonic() + TIMEOUT
    while True:
        names = [p.name for p in (c.dir(c.nodes[0]) / "shared").iterdir() if pattern.fullmatch(p.name)]
        if names or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if len(names) != 1:
        raise Failure(f"expected one conflict copy matching {pattern.pattern}, found {names}")
    copy = f"shared/{names[0]}"
    c.model[copy] = older
    c.wait_converged()
    deadline = time.monotonic() + 5  # informational: the digests travel once a second
    while True:
        synced = {n: sum(p["synced"] for p in c.status(n)["peers"]) for n in c.nodes}
        if min(synced.values()) >= len(c.nodes) - 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return (f"{len(c.model)} paths, conflict copy {copy.split('/')[-1]}; peers synchronized "
            + ", ".join(f"{n}:{k}" for n, k in synced.items()))


def check_live_create(c: Cluster):
    n = c.nodes[1]
    c.write(n, "live/created.txt", b"created live\n")
    c.write(n, "live/nested/a/b/new.bin", os.urandom(200 * 1024))
    c.mkdir(n, "live/empty folder")
    c.wait_converged()
    return f"on {n}"


def check_live_modify(c: Cluster):
    n = c.nodes[2]
    c.write(n, "live/created.txt", b"modified live, and longer than before\n")
    p = c.dir(n) / "live/nested/a/b/new.bin"
    with open(p, "r+b") as f:  # in-place overwrite in the middle
        f.seek(100 * 1024)
        f.write(os.urandom(1000))
    c.model["live/nested/a/b/new.bin"] = entry_of(p)
    c.wait_converged()
    return f"on {n}"


def check_rename_file(c: Cluster):
    n = c.nodes[0]
    c.rename(n, "live/created.txt", "live/renamed.txt")
    c.wait_converged()
    return f"on {n}"


def check_rename_folder(c: Cluster):
    n, victim = c.nodes[3 % len(c.nodes)], f"seed-{c.nodes[1]}"
    c.rename(n, victim, f"moved-{victim}")
    c.wait_converged()
    return f"{victim}/ -> moved-{victim}/ on {n}"


def check_delete_file(c: Cluster):
    n, rel = c.nodes[1], f"seed-{c.nodes[2]}/hello.txt"
    c.delete(n, rel)
    c.wait_converged()
    return f"{rel} on {n}"


def check_delete_folder(c: Cluster):
    n, rel = c.nodes[2], f"seed-{c.nodes[3 % len(c.nodes)]}/sub"
    c.delete(n, rel)
    c.wait_converged()
    return f"{rel}/ on {n}"


BIG = "big/random.bin"


def check_big_file(c: Cluster):
    n = c.nodes[0]
    p = c.dir(n) / BIG
    c.mkdir(n, "big")
    before = c.counters()
    start = time.monotonic()
    with open(p, "wb") as f:
        for _ in range(BIG_MIB):
            f.write(os.urandom(MIB))
    c.model[BIG] = entry_of(p)
    c.wait_converged(timeout=max(TIMEOUT, 300))
    took = time.monotonic() - start
    after = c.counters()
    size = BIG_MIB * MIB
    files = sum(added(after[m], before[m], "files_received") for m in c.nodes)
    wire = sum(added(after[m], before[m], "content_bytes_received") for m in c.nodes)
    pieces = sum(added(after[m], before[m], "pieces_received") for m in c.nodes)
    from_source = added(after[n], before[n], "pieces_sent")
    return (f"{BIG_MIB} MiB from {n} to {len(c.nodes) - 1} nodes in {took:.1f}s; "
            f"{files} files received ({files - (len(c.nodes) - 1)} more than one per node: "
            f"a partly written file), {wire / size:.4f}x the file in content bytes; "
            f"{pieces} pieces received, {from_source} of them sent by {n}")


def check_delta(c: Cluster):
    n, size = c.nodes[0], BIG_MIB * MIB
    before = c.counters()
    p = c.dir(n) / BIG
    with open(p, "r+b") as f:  # 4 KiB, unaligned, in the middle
        f.seek(size // 2 + 12345)
        f.write(os.urandom(4096))
    c.model[BIG] = entry_of(p)
    c.wait_converged(timeout=max(TIMEOUT, 300))
    # Only this file changed: what the nodes received since is its edit.
    after = c.counters()
    files = sum(added(after[m], before[m], "files_received") for m in c.nodes)
    deltas = sum(added(after[m], before[m], "deltas_received") for m in c.nodes)
    wire = sum(added(after[m], before[m], "content_bytes_received") for m in c.nodes)
    if not files:
        raise Failure(f"no node counted a received file after the edit of {BIG}: cannot measure")
    figure = (f"4 KiB edit: {files} files received ({deltas} as deltas), {wire} content bytes = "
              f"{wire / size:.3%} of the {BIG_MIB} MiB file (limit {DELTA_LIMIT:.0%})")
    if wire >= DELTA_LIMIT * size:
        raise Failure(figure)
    return figure


def check_offline(c: Cluster):
    """Stop a node, change and delete files on the others (and on the stopped
    node's own folder), restart it: it catches up, deleted files stay deleted."""
    a, b, d, away = c.nodes[0], c.nodes[1], c.nodes[2], c.nodes[-1]
    for rel in ("keep.txt", "doomed.txt", "doomed-dir/x.txt", "edit-me.txt"):
        c.write(a, f"offline/{rel}", f"{rel} before\n".encode())
    c.wait_converged()
    sh(*COMPOSE, "stop", away)
    others = [m for m in c.nodes if m != away]
    c.delete(a, "offline/doomed.txt")
    c.delete(a, "offline/doomed-dir")
    c.write(b, "offline/edit-me.txt", b"edited while node was away\n")
    c.write(d, "offline/created-while-away.txt", b"new\n")
    c.write(away, "offline/written-on-stopped-node.txt", b"written while stopped\n")
    c.wait_converged(others, model={k: v for k, v in c.model.items()
                                    if k != "offline/written-on-stopped-node.txt"})
    sh(*COMPOSE, "start", away)
    c.wait_converged()
    time.sleep(5)  # a resurrected delete would show up now
    c.wait_converged(timeout=5)
    return f"{away} stopped and restarted"


def check_partition(c: Cluster):
    """Cut a node from the network, change different files on both sides,
    reconnect it with its original IP: everything converges."""
    a, cut = c.nodes[0], c.nodes[2]
    for rel in ("shared.txt", "gone.txt", "cut-edit.txt"):
        c.write(a, f"partition/{rel}", f"{rel} before\n".encode())
    c.wait_converged()
    nets = json.loads(sh("docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", c.cid[cut]))
    net, cfg = next(iter(nets.items()))
    ip = (cfg.get("IPAMConfig") or {}).get("IPv4Address") or cfg["IPAddress"]
    before = c.counters()
    sh("docker", "network", "disconnect", net, c.cid[cut])
    cut_at = time.monotonic()
    try:
        c.write(a, "partition/side-a.txt", b"written on the connected side\n")
        c.delete(a, "partition/gone.txt")
        connected_side = dict(c.model)
        c.write(cut, "partition/side-b.txt", b"written on the cut node\n")
        c.write(cut, "partition/cut-edit.txt", b"edited on the cut node\n")
        rest = [m for m in c.nodes if m != cut]
        c.wait_converged(rest, model=connected_side)
        if (c.dir(cut) / "partition/side-a.txt").exists():
            raise Failure(f"{cut} received partition/side-a.txt while disconnected: "
                          f"`docker network disconnect` did not cut it off")
        time.sleep(max(0.0, PARTITION_SECS - (time.monotonic() - cut_at)))
    finally:
        sh("docker", "network", "connect", "--ip", ip, net, c.cid[cut])
    c.wait_converged()
    after = c.counters()
    again = [m for m in c.nodes if added(after[m], before[m], "connections")]
    return (f"{cut} ({ip}) cut from {net} for {PARTITION_SECS:.0f}s, reconnected; "
            f"nodes with new connections since: {', '.join(again) or 'none'}")


def check_health(c: Cluster):
    """No node closed a connection of its honest peers as a protocol error
    or refused one (counters), and none panicked. A panic leaves no trace
    but the standard library's `panicked at` line on stderr: that check
    alone reads the logs."""
    panics, errors = [], 0
    for n in c.nodes:
        for line in c.log_lines(n):
            line = ANSI.sub("", line)
            if "panicked at" in line:
                panics.append(f"{n}: {line.strip()}")
            errors += " ERROR " in line
    if panics:
        raise Failure("panic in the logs:\n  " + "\n  ".join(panics[:5]))
    counters = c.counters()
    bad = {n: {k: v[k] for k in ("protocol_errors", "handshakes_refused") if v[k]} for n, v in counters.items()}
    bad = {n: v for n, v in bad.items() if v}
    if bad:
        raise Failure(f"honest nodes counted protocol errors or refusals: {bad}")
    failures = {n: v["failures"] for n, v in counters.items()}
    return f"{errors} ERROR lines; failures (retried) per node: {failures}"


CHECKS = [  # (name, function, top-level names it touches: compared alone after a failure)
    ("discovery: every node connects to every other by broadcast", check_discovery, None),
    ("initial sync: different seeds converge to the union", check_union, None),
    ("live create (files, nested and empty folders)", check_live_create, ["live"]),
    ("live modify", check_live_modify, ["live"]),
    ("live rename file", check_rename_file, ["live"]),
    ("live rename folder", check_rename_folder, ["seed-*", "moved-*"]),
    ("live delete file", check_delete_file, ["seed-*"]),
    ("live delete folder", check_delete_folder, ["seed-*"]),
    (f"{BIG_MIB} MiB random file reaches all nodes", check_big_file, ["big"]),
    ("small edit of the big file travels as a delta", check_delta, ["big"]),
    ("stopped node catches up, deletes stay deleted", check_offline, ["offline"]),
    ("disconnected node converges after reconnect", check_partition, ["partition"]),
    ("no panics, protocol errors or refusals", check_health, None),
]


def start_cluster(c: Cluster):
    c.prepare()
    seed(c)
    return c.up()


def main() -> int:
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)  # also when started with SIGINT ignored

    results = []  # (status, seconds, name, detail)
    started = t = time.monotonic()
    c, name = None, "start"
    try:
        c = Cluster()
        print(f"e2e: {len(c.nodes)} nodes, scratch {SCRATCH}, subnet {NET_PREFIX}.0/24", flush=True)
        for name, fn, scope in [("seed and start the cluster", start_cluster, None)] + CHECKS:
            print(f"-> {name}", flush=True)
            t = time.monotonic()
            c.scope = scope if c.degraded else None
            try:
                detail, status = fn(c) or "", "PASS"
            except KeyboardInterrupt:
                raise
            except Failure as e:
                detail, status = str(e), "FAIL"
            except FileNotFoundError as e:
                detail, status = f"cannot run: {e.filename} is missing (an earlier check failed?)", "FAIL"
            except Exception as e:
                where = traceback.extract_tb(e.__traceback__)[-1]
                detail, status = f"{type(e).__name__}: {e} (e2e.py line {where.lineno})", "FAIL"
            results.append((status, time.monotonic() - t, name, detail))
            print(f"   {status} {time.monotonic() - t:.1f}s {detail}", flush=True)
            if status == "FAIL":
                if fn is start_cluster:
                    break  # nothing can run without a cluster
                c.degraded = True
    except KeyboardInterrupt as e:
        results.append(("ABORT", time.monotonic() - t, name, f"interrupted ({str(e) or 'Ctrl-C'})"))
    except Exception as e:
        results.append(("ABORT", time.monotonic() - t, name, f"harness error: {e}"))
    finally:
        if c is not None:
            print("-> tear down", flush=True)
            c.teardown()

    ran = {r[2] for r in results}
    results += [("SKIP", 0.0, name, "") for name, _, _ in CHECKS if name not in ran]
    total = time.monotonic() - started
    print(f"\n==== dirsync e2e summary ({PROJECT}; node logs in {LOG_DIR})")
    for status, secs, name, detail in results:
        first, *rest = (detail or "").splitlines() or [""]
        print(f"{status:5} {secs:7.1f}s  {name}" + (f" — {first}" if first else ""))
        for line in rest if status != "PASS" else []:
            print(f"{'':16}{line}")
    passed = sum(r[0] == "PASS" for r in results)
    print(f"==== {passed}/{len(results)} passed in {total:.1f}s wall time")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""dirsync benchmarks against rsync and a raw TCP copy, two nodes on loopback.

Run through `just bench`, which builds dirsync in release and starts this
script inside a private network namespace (`unshare -n`), so the loopback
byte counters in /proc/net/dev count only the traffic of the workload being
measured: dirsync, an `rsync --daemon`, or a plain socket stream alike.

Each workload runs BENCH_REPEAT times (default 3) and the medians are
reported. Prints one table and writes it as JSON to target/bench.json.
BENCH_SCALE (default 1.0) shrinks the file counts and sizes for a quick try.
Stdlib only.
"""

import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from dirsync_tree import digest as tree_digest  # noqa: E402  (the shared tree reader)

BIN = Path(os.environ.get("DIRSYNC_BIN", ROOT / "target/release/dirsync"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
# Comma-separated workload prefixes to run (e.g. "W1,W5"); all when unset.
ONLY = [w for w in os.environ.get("BENCH_ONLY", "").split(",") if w]
TIMEOUT = 600
# Seconds to let the disk settle (written back) before each measured phase.
SETTLE = float(os.environ.get("BENCH_SETTLE", "3"))
BPORT = 15900
_next_port = [16100]


def port():
    _next_port[0] += 1
    return _next_port[0]


def lo_tx_bytes():
    for line in Path("/proc/net/dev").read_text().splitlines():
        if line.strip().startswith("lo:"):
            return int(line.split(":", 1)[1].split()[8])
    raise RuntimeError("no loopback interface in /proc/net/dev")


def peak_rss_mib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def wait(cond, what, timeout=TIMEOUT, every=0.002):
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


class Node:
    """A dirsync process on loopback; stderr goes to a log file."""

    running: list["Node"] = []  # killed at exit, also when a workload fails

    def __init__(self, directory, scratch):
        self.dir = Path(directory)
        self.port = port()
        self.log = Path(scratch) / f"node-{self.port}.log"
        self.proc = subprocess.Popen(
            [str(BIN), str(self.dir), "-l", str(self.port), "-b", str(BPORT), "--broadcast-addr", "127.255.255.255"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),
            env={**os.environ, "RUST_LOG": os.environ.get("NODE_LOG", "info")},
        )
        Node.running.append(self)
        # The log is read incrementally: polling every few milliseconds must
        # not re-read megabytes of `applied` lines (that CPU would be taken
        # from the nodes being measured).
        self._read = 0  # bytes of whole lines already counted
        self._counts: dict[bytes, int] = {}

    def count(self, needle):
        key = needle.encode()
        if key not in self._counts:
            with open(self.log, "rb") as f:
                self._counts[key] = f.read(self._read).count(key)
        with open(self.log, "rb") as f:
            f.seek(self._read)
            new = f.read()
        whole = new.rfind(b"\n") + 1
        if whole:
            self._read += whole
            for k in self._counts:
                self._counts[k] += new[:whole].count(k)
        return self._counts[key]

    def wait_for(self, needle, n=1):
        return wait(lambda: self.count(needle) >= n, f"{needle!r} x{n} in {self.log}")

    def rss(self):
        return peak_rss_mib(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        if self in Node.running:
            Node.running.remove(self)


def make_small_tree(root, files, folders, lo=1024, hi=16 * 1024, seed=1):
    rng = random.Random(seed)
    for i in range(files):
        d = Path(root) / f"dir{i % folders:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:06d}.bin").write_bytes(rng.randbytes(rng.randint(lo, hi)))


def make_big_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


# ----- reference tools -----------------------------------------------------

class RsyncDaemon:
    def __init__(self, dest, scratch):
        self.port = port()
        conf = Path(scratch) / f"rsyncd-{self.port}.conf"
        conf.write_text(f"use chroot = no\n[dst]\npath = {dest}\nread only = no\nuid = root\ngid = root\n")
        self.proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--port={self.port}", f"--config={conf}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: _port_open(self.port), "rsync daemon")

    def push(self, src, *flags):
        """Push src/ to the daemon; returns (seconds, client peak RSS MiB)."""
        start = time.monotonic()
        client = subprocess.Popen(["rsync", "-a", *flags, f"{src}/", f"rsync://127.0.0.1:{self.port}/dst/"])
        _, status, usage = os.wait4(client.pid, 0)  # this child's own peak RSS
        took = time.monotonic() - start
        if status != 0:
            raise RuntimeError(f"rsync push failed (wait status {status})")
        return took, usage.ru_maxrss / 1024

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def _port_open(p):
    try:
        socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
        return True
    except OSError:
        return False


def raw_copy(src, dst):
    """A plain socket stream of one file into another, fsynced: the floor."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    p = srv.getsockname()[1]

    def receive():
        conn, _ = srv.accept()
        with open(dst, "wb") as f:
            while True:
                b = conn.recv(1 << 20)
                if not b:
                    break
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        conn.close()

    t = threading.Thread(target=receive)
    t.start()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", p)) as c, open(src, "rb") as f:
        c.sendfile(f)
    t.join()
    srv.close()
    return time.monotonic() - start


# ----- workloads -------------------------------------------------------------

def settle_disk():
    os.sync()
    time.sleep(SETTLE)


def measure(fn):
    settle_disk()
    before = lo_tx_bytes()
    result = fn()
    result["wire_bytes"] = lo_tx_bytes() - before
    return result


def initial_sync(populate, scratch, extra_peers=0):
    """Node A holds a tree; B (and extra peers) start empty. Time until every
    empty node is synchronized."""
    a_dir, peers_dirs = Path(scratch) / "a", [Path(scratch) / f"b{i}" for i in range(1 + extra_peers)]
    for d in [a_dir, *peers_dirs]:
        d.mkdir(parents=True)
    populate(a_dir)
    a = Node(a_dir, scratch)
    a.wait_for("listening")

    def run():
        start = time.monotonic()
        peers = [Node(d, scratch) for d in peers_dirs]
        for p in peers:
            # Synchronized with every other node, A among them (an empty
            # peer is a quick first one).
            p.wait_for("synchronized peer=", len(peers))
        took = time.monotonic() - start
        return {"seconds": took, "rss_mib": max([a.rss()] + [p.rss() for p in peers]), "nodes": [a, *peers]}

    r = measure(run)
    for d in peers_dirs:
        if tree_digest(d) != tree_digest(a_dir):
            raise RuntimeError(f"{d} differs from {a_dir} after sync")
    return r


def stop_all(r):
    for n in r.pop("nodes", []):
        n.stop()


def rsync_initial(populate, scratch, destinations=1, flags=()):
    src = Path(scratch) / "src"
    src.mkdir(parents=True)
    populate(src)
    dsts = []
    for i in range(destinations):
        d = Path(scratch) / f"dst{i}"
        d.mkdir()
        dsts.append(RsyncDaemon(d, scratch))

    def run():
        took, rss = 0.0, 0.0
        for d in dsts:
            t, r = d.push(src, *flags)
            took += t
            rss = max(rss, r)
        return {"seconds": took, "rss_mib": rss}

    r = measure(run)
    for d in dsts:
        d.stop()
    return r


def w1(scratch):
    n = max(10, int(5000 * SCALE))
    populate = lambda d: make_small_tree(d, n, 50)
    r = initial_sync(populate, scratch / "d")
    stop_all(r)
    ref = rsync_initial(populate, scratch / "r")
    # dirsync fsyncs every file before it becomes visible; rsync does not
    # unless asked, so this is the like-for-like reference.
    ref_fsync = rsync_initial(populate, scratch / "rf", flags=("--fsync",))
    return r, {"rsync": ref, "rsync --fsync": ref_fsync}


def w2_w3_renames(scratch):
    size = max(1 << 20, int((512 << 20) * SCALE))
    results = {}
    d = scratch / "d"
    d.mkdir()
    r = initial_sync(lambda p: make_big_file(p / "big.bin", size), d)
    a, b = r["nodes"]
    results["W2"] = dict(r)

    # W3: 4 KiB changed in the middle.
    def edit(path):
        with open(path, "r+b") as f:
            f.seek(size // 2)
            f.write(os.urandom(4096))

    def w3():
        applied = b.count("applied path=big.bin")
        start = time.monotonic()
        edit(a.dir / "big.bin")
        b.wait_for("applied path=big.bin", applied + 1)
        return {"seconds": time.monotonic() - start, "rss_mib": max(a.rss(), b.rss())}

    results["W3"] = measure(w3)

    # Rename of the big file: content must not travel again.
    def rename_big():
        start = time.monotonic()
        os.rename(a.dir / "big.bin", a.dir / "big-renamed.bin")
        wait(lambda: (b.dir / "big-renamed.bin").exists() and not (b.dir / "big.bin").exists(), "big rename")
        return {"seconds": time.monotonic() - start, "rss_mib": max(a.rss(), b.rss())}

    results["rename 512 MiB file"] = measure(rename_big)

    # Rename of a folder of 1,000 files.
    folder = a.dir / "folder"
    make_small_tree(folder, max(10, int(1000 * SCALE)), 1, lo=100, hi=2000, seed=7)
    wait(lambda: tree_digest(b.dir) == tree_digest(a.dir), "folder to arrive")

    def rename_folder():
        start = time.monotonic()
        os.rename(folder, a.dir / "folder-renamed")
        wait(lambda: tree_digest(b.dir) == tree_digest(a.dir), "folder rename")
        return {"seconds": time.monotonic() - start, "rss_mib": max(a.rss(), b.rss())}

    results["rename folder of 1,000 files"] = measure(rename_folder)
    for n in r["nodes"]:
        n.stop()
    del results["W2"]["nodes"]

    # References: raw copy and rsync for W2; rsync for W3 and the renames.
    src = scratch / "ref-src"
    src.mkdir()
    make_big_file(src / "big.bin", size)
    settle_disk()
    before = lo_tx_bytes()
    raw_s = raw_copy(src / "big.bin", scratch / "raw.bin")
    raw = {"seconds": raw_s, "wire_bytes": lo_tx_bytes() - before}
    dst = scratch / "ref-dst"
    dst.mkdir()
    daemon = RsyncDaemon(dst, scratch)
    rs2 = measure(lambda: dict(zip(("seconds", "rss_mib"), daemon.push(src))))
    edit(src / "big.bin")
    # --ignore-times: the edit may keep size and mtime second, which rsync's
    # quick check would take for "unchanged".
    rs3 = measure(lambda: dict(zip(("seconds", "rss_mib"), daemon.push(src, "--ignore-times"))))
    edit(src / "big.bin")  # another 4 KiB, for the like-for-like run (see W1)
    rs3f = measure(lambda: dict(zip(("seconds", "rss_mib"), daemon.push(src, "--ignore-times", "--fsync"))))
    os.rename(src / "big.bin", src / "big-renamed.bin")
    rs_ren = measure(lambda: dict(zip(("seconds", "rss_mib"), daemon.push(src))))
    daemon.stop()
    return results, {"W2": {"raw copy": raw, "rsync": rs2}, "W3": {"rsync": rs3, "rsync --fsync": rs3f}, "rename 512 MiB file": {"rsync (no rename detection)": rs_ren}}


def w4(scratch):
    d = scratch / "d"
    d.mkdir()
    r = initial_sync(lambda p: None, d)
    a, b = r["nodes"]
    lat = []
    for i in range(50 if SCALE >= 1 else 10):
        payload = os.urandom(32).hex().encode()  # 64 bytes
        start = time.monotonic()
        (a.dir / f"ping{i:02d}.txt").write_bytes(payload)
        target = b.dir / f"ping{i:02d}.txt"
        wait(lambda: target.exists() and target.read_bytes() == payload, "64-byte file", every=0.0005)
        lat.append(time.monotonic() - start)
        time.sleep(0.2)
    rss = max(a.rss(), b.rss())
    stop_all(r)
    lat.sort()
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    return {"seconds": p50, "p95_seconds": p95, "rss_mib": rss}, {}


def w5(scratch):
    n = max(10, int(1000 * SCALE))
    populate = lambda d: make_small_tree(d, n, 10, seed=5)
    two = initial_sync(populate, scratch / "two")
    stop_all(two)
    three = initial_sync(populate, scratch / "three", extra_peers=1)
    stop_all(three)
    three["ratio_to_two_nodes"] = three["seconds"] / two["seconds"]
    return three, {"two nodes": two}


def w100k(scratch):
    n = max(100, int(100_000 * SCALE))
    r = initial_sync(lambda d: make_small_tree(d, n, 100, lo=10, hi=200, seed=9), scratch / "d")
    stop_all(r)
    return r, {}


WORKLOADS = [
    ("W1 5,000 small files, initial sync", w1),
    ("W2/W3/renames", w2_w3_renames),
    ("W4 64-byte file latency (p50)", w4),
    ("W5 1,000 files to two peers", w5),
    ("100,000 files, initial sync", w100k),
]


def median_of(runs):
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
    return out


def fmt_row(name, tool, r, dirsync=None):
    """One table row; for a reference tool, dirsync's time and bytes as a
    fraction of its (the issue's targets: W1 < 0.8 of rsync, W2 <= 1.2 of a
    raw copy, W3 <= 1.0 of rsync)."""
    secs, wire, rss = r.get("seconds", float("nan")), r.get("wire_bytes", float("nan")), r.get("rss_mib", float("nan"))
    ratio = ""
    if dirsync is not None and secs and wire:
        ratio = f"time {dirsync['seconds'] / secs:.2f}, wire {dirsync['wire_bytes'] / wire:.2f}"
    notes = []
    if "p95_seconds" in r:
        notes.append(f"p95 {r['p95_seconds'] * 1000:.1f} ms")
    if "ratio_to_two_nodes" in r:
        notes.append(f"{r['ratio_to_two_nodes']:.2f}x the two-node time")
    return f"| {name} | {tool} | {secs * 1000:.1f} ms | {wire / 1e6:.3f} MB | {rss:.1f} MiB | {ratio} | {'; '.join(notes)} |"


def main():
    if not BIN.exists():
        sys.exit(f"{BIN} not found: build with `cargo build --release` (just bench does)")
    if shutil.which("rsync") is None:
        sys.exit("rsync not found: `apt-get install rsync` (just bench does)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    # One scratch tree for the whole run, removed only at the end: ext4 (here
    # without a journal) skips inodes freed in the last minute when it makes
    # new files, so creating thousands of files right after deleting
    # thousands gets several times slower; deleting each run's tree would
    # slow down whichever tool runs next.
    scratch_root = Path(tempfile.mkdtemp(prefix="dirsync-bench-"))
    try:
        run_workloads(scratch_root)
    finally:
        for node in list(Node.running):
            node.stop()
        shutil.rmtree(scratch_root, ignore_errors=True)


def run_workloads(scratch_root):
    table = {}
    for title, fn in WORKLOADS:
        if ONLY and not any(title.startswith(w) for w in ONLY):
            continue
        runs_main, runs_ref = [], []
        for i in range(REPEAT):
            tmp = scratch_root / f"{title.split()[0].replace('/', '-')}-{i}"
            tmp.mkdir()
            print(f"# {title}: run {i + 1}/{REPEAT}", file=sys.stderr, flush=True)
            main_r, ref_r = fn(tmp)
            runs_main.append(main_r)
            runs_ref.append(ref_r)
        if "W2/W3" in title:
            for key in runs_main[0]:
                table[key] = {"dirsync": median_of([r[key] for r in runs_main])}
                for tool in runs_ref[0].get(key, {}):
                    table[key][tool] = median_of([r[key][tool] for r in runs_ref])
        else:
            table[title] = {"dirsync": median_of(runs_main)}
            for tool in runs_ref[0]:
                table[title][tool] = median_of([r[tool] for r in runs_ref])
    lines = [f"dirsync benchmarks: median of {REPEAT} runs, scale {SCALE}, nodes on loopback in a private network namespace",
             "wire = every loopback byte of the run, TCP/IP headers included; dirsync/ref = dirsync's figure divided by the reference's",
             "| workload | tool | time | wire | peak RSS | dirsync/ref | notes |", "|---|---|---|---|---|---|---|"]
    for name, tools in table.items():
        lines.append(fmt_row(name, "dirsync", tools["dirsync"]))
        lines += [fmt_row(name, tool, r, tools["dirsync"]) for tool, r in tools.items() if tool != "dirsync"]
    print("\n".join(lines))
    out = ROOT / "target/bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"repeat": REPEAT, "scale": SCALE, "results": table}, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()

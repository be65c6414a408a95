#!/usr/bin/env python3
"""dirsync benchmarks against rsync and a raw TCP copy, two nodes on loopback.

Run through `just bench`, which builds dirsync in release and starts this
script inside a private network namespace (`unshare -n`), so the loopback
byte counters in /proc/net/dev count only the traffic of the workload being
measured: dirsync, an `rsync --daemon`, or a plain socket stream alike.

Each workload runs BENCH_REPEAT times (default 3) and the medians are
reported. Prints one table and writes it as JSON to target/bench.json.
BENCH_SCALE (default 1.0) shrinks the file counts and sizes for a quick try.

The `scale` workload (issue "A million files") runs only when BENCH_ONLY
names it: 1,000,000 x BENCH_SCALE paths, measured against the issue's
targets in a table of its own (see scale() below; BENCH_RESCAN sets its
nodes' --rescan-interval). DIRSYNC_BIN picks another dirsync binary.
Stdlib only.
"""

import datetime
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
from dirsync_tree import STATE_DIR, digest as tree_digest  # noqa: E402  (the shared tree reader)

sys.path.insert(0, str(ROOT / "bench"))
import lab  # noqa: E402  (the network lab of W6)

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


def proc_status_mib(pid, field):
    """A kB line of /proc/PID/status (VmHWM, VmRSS) in MiB; NaN once gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib(pid):
    return proc_status_mib(pid, "VmHWM")


def rss_mib(pid):
    return proc_status_mib(pid, "VmRSS")


def reset_peak_rss(pid):
    """Start VmHWM again from the current RSS (clear_refs 5, Linux 4.0+).
    False when the kernel refuses: the peak then still holds what came before."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid):
    """CPU time (user + system, every thread, exited ones too) of a process.
    Its CPU clock gives nanoseconds (clock id MAKE_PROCESS_CPUCLOCK(pid,
    CPUCLOCK_SCHED)); utime + stime of /proc/PID/stat, in clock ticks of
    10 ms, are the fallback."""
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(cond, what, timeout=TIMEOUT, every=0.002):
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


class Node:
    """A dirsync process on loopback; stderr goes to a log file. Nodes find
    each other by broadcast on 127.255.255.255, or, given `peers` (a list,
    maybe empty), only by dialling those with --peer (--no-discovery: no
    announcements on the wire). `extra` flags are passed through. Given a
    `lab.Host`, the node runs on that host of the lab and broadcasts on
    the lab's network."""

    running: list["Node"] = []  # killed at exit, also when a workload fails

    def __init__(self, directory, scratch, peers=None, extra=(), host=None):
        self.dir = Path(directory)
        self.port = port()
        self.log = Path(scratch) / f"node-{self.port}.log"
        if peers is None:
            find = ["--broadcast-addr", lab.BROADCAST if host else "127.255.255.255"]
        else:
            find = ["--no-discovery"] + [a for p in peers for a in ("--peer", f"127.0.0.1:{p.port}")]
        self.proc = subprocess.Popen(
            [*(host.prefix if host else []), str(BIN), str(self.dir), "-l", str(self.port), "-b", str(BPORT), *find, *extra],
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

    def wait_for(self, needle, n=1, timeout=TIMEOUT):
        return wait(lambda: self.count(needle) >= n, f"{needle!r} x{n} in {self.log}", timeout)

    def rss(self):
        return peak_rss_mib(self.proc.pid)

    def status(self, timeout=60):
        """What `dirsync status --json DIR` prints, asked straight on the
        node's control socket (src/app/control.rs: a line `status`, one JSON
        line back), so a poll costs no process start. Raises OSError or
        ValueError when the node does not answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.dir / STATE_DIR / "control.sock"))
            s.sendall(b"status\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def terminate(self, timeout=TIMEOUT):
        """Stop cleanly (SIGTERM: the node saves its index) and wait for the
        exit; SIGKILL after `timeout`."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"# {self.log}: no exit {timeout} s after SIGTERM, killed", file=sys.stderr, flush=True)
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
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


def kernel_copy(src, dst):
    """The floor of a 4 KiB edit in a big file on a filesystem without
    reflinks: the new file is the old one copied in the kernel
    (copy_file_range, as dirsync copies unchanged ranges), then fsynced."""
    start = time.monotonic()
    with open(src, "rb") as s, open(dst, "wb") as d:
        left = os.fstat(s.fileno()).st_size
        while left > 0:
            n = os.copy_file_range(s.fileno(), d.fileno(), left)
            if n == 0:
                break
            left -= n
        os.fsync(d.fileno())
    took = time.monotonic() - start
    os.unlink(dst)
    return took


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


def initial_sync(populate, scratch, extra_peers=0, flags=()):
    """Node A holds a tree; B (and extra peers) start empty. Time until every
    empty node is synchronized. `flags` go to every node."""
    a_dir, peers_dirs = Path(scratch) / "a", [Path(scratch) / f"b{i}" for i in range(1 + extra_peers)]
    for d in [a_dir, *peers_dirs]:
        d.mkdir(parents=True)
    populate(a_dir)
    a = Node(a_dir, scratch, extra=flags)
    a.wait_for("listening")
    # Large files are hashed after "listening": the clock starts once A
    # has them all in its index, as it did when they were hashed before.
    wait(lambda: a.status().get("hashing", 0) == 0, "A to hash its files", every=0.05)

    def run():
        start = time.monotonic()
        peers = [Node(d, scratch, extra=flags) for d in peers_dirs]
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
    floor3 = measure(lambda: {"seconds": kernel_copy(src / "big.bin", scratch / "copy.bin")})
    os.rename(src / "big.bin", src / "big-renamed.bin")
    rs_ren = measure(lambda: dict(zip(("seconds", "rss_mib"), daemon.push(src))))
    daemon.stop()
    return results, {"W2": {"raw copy": raw, "rsync": rs2}, "W3": {"rsync": rs3, "rsync --fsync": rs3f, "kernel copy + fsync (the floor)": floor3}, "rename 512 MiB file": {"rsync (no rename detection)": rs_ren}}


def w2_keyed(scratch):
    """W2 with a cluster key (every byte authenticated and encrypted),
    against a raw copy of the same file in the same run."""
    size = max(1 << 20, int((512 << 20) * SCALE))
    key = Path(scratch) / "cluster.key"
    subprocess.run([str(BIN), "keygen", str(key)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = initial_sync(lambda p: make_big_file(p / "big.bin", size), scratch / "d", flags=("--key-file", str(key)))
    stop_all(r)
    src = scratch / "d" / "a" / "big.bin"
    raw = measure(lambda: {"seconds": raw_copy(src, scratch / "raw.bin")})
    return r, {"raw copy": raw}


RATE_LIMIT = 100_000_000  # bytes/s: under the disk's speed here, over a LAN's


def w2_limited(scratch):
    """W2 with a bandwidth limit of RATE_LIMIT, once on the sending side
    (--max-send-rate) and once on the receiving side (--max-recv-rate):
    the rate the file arrives at, against the limit: end to end (B's start,
    the handshake, A's piece map of the file and the durable install
    included), and while content flows (B's received-bytes counter from
    10% to 90% of the file: what the limit governs). Meanwhile 64-byte
    files go the other way, B to A: their latency under a saturated limit."""
    size = max(1 << 20, int((512 << 20) * SCALE))
    results = {}
    for side, flag in (("send", "--max-send-rate"), ("receive", "--max-recv-rate")):
        d = scratch / side
        a_dir, b_dir = d / "a", d / "b"
        a_dir.mkdir(parents=True)
        b_dir.mkdir()
        make_big_file(a_dir / "big.bin", size)
        flags = (flag, f"{RATE_LIMIT // 1_000_000}MB/s")
        a = Node(a_dir, d, extra=flags)
        a.wait_for("listening")
        wait(lambda: a.status().get("hashing", 0) == 0, "A to hash its files", every=0.05)
        settle_disk()
        start = time.time()
        b = Node(b_dir, d, extra=flags)
        lat = []
        flowing = []  # (time, content bytes B received), sampled between pings
        while b.count("applied path=big.bin") == 0:
            try:
                got = sum(p.get("bytes_received", 0) for p in b.status(timeout=5).get("peers", []))
                flowing.append((time.monotonic(), got))
            except (OSError, ValueError):
                pass
            payload = os.urandom(32).hex().encode()
            target = a_dir / f"ping{len(lat):04d}.txt"
            sent = time.monotonic()
            (b_dir / target.name).write_bytes(payload)
            wait(lambda: target.exists() and target.read_bytes() == payload, "64-byte file", every=0.0005)
            lat.append(time.monotonic() - sent)
            time.sleep(0.1)
        took = logged_at(b, "applied path=big.bin") - start
        p50, p95 = percentiles(lat)
        ten = next((s for s in flowing if s[1] >= size * 0.1), None)
        ninety = next((s for s in flowing if s[1] >= size * 0.9), None)
        steady = (ninety[1] - ten[1]) / (ninety[0] - ten[0]) / RATE_LIMIT if ten and ninety and ninety[0] > ten[0] else float("nan")
        results[f"W2r 512 MiB, --max-{'send' if side == 'send' else 'recv'}-rate 100MB/s"] = {
            "seconds": took, "rss_mib": max(a.rss(), b.rss()), "rate_ratio": size / took / RATE_LIMIT, "steady_ratio": steady,
            "ping_p50_seconds": p50, "ping_p95_seconds": p95, "ping_samples": len(lat)}
        a.stop()
        b.stop()
    return results, {}


def logged_at(node, needle):
    """Wall-clock time (seconds since the epoch) of the first log line of
    `node` holding `needle`, from the line's own timestamp."""
    for line in node.log.read_text(errors="replace").splitlines():
        if needle in line:
            stamp = line.split()[0].rstrip("Z")
            return datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc).timestamp()
    raise RuntimeError(f"{needle!r} not in {node.log}")


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
    p50, p95 = percentiles(lat)
    return {"seconds": p50, "p95_seconds": p95, "rss_mib": rss}, {}


def w4_hashing(scratch):
    """W4 while node A hashes a 4 GiB file (4 GiB x BENCH_SCALE) it was
    just given, read from disk (evicted from the page cache first), then
    while A sends it to B: 64-byte files written on B must still reach A
    fast. Pings run until A has hashed the big file (its `files_hashed`
    counter moves), then until B holds it."""
    d = scratch / "d"
    d.mkdir()
    r = initial_sync(lambda p: None, d)
    a, b = r["nodes"]
    big = scratch / "big.bin"
    size = max(64 << 20, int((4 << 30) * SCALE))
    block = os.urandom(8 << 20)
    with open(big, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    hashed_before = counter(a.status(), "files_hashed")
    hashing, sending = [], []
    start_hash = time.monotonic()
    os.rename(big, a.dir / "big.bin")
    hashed_at = None
    arrived = lambda: (b.dir / "big.bin").exists() and (b.dir / "big.bin").stat().st_size == size
    for i in range(2000):
        payload = os.urandom(32).hex().encode()  # 64 bytes
        start = time.monotonic()
        (b.dir / f"ping{i:04d}.txt").write_bytes(payload)
        target = a.dir / f"ping{i:04d}.txt"
        wait(lambda: target.exists() and target.read_bytes() == payload, "64-byte file", every=0.0005)
        (sending if hashed_at else hashing).append(time.monotonic() - start)
        if hashed_at is None and counter(a.status(), "files_hashed") > hashed_before:
            hashed_at = time.monotonic() - start_hash
        if hashed_at is not None and arrived():
            break
        time.sleep(0.05)
    rss = max(a.rss(), b.rss())
    stop_all(r)
    p50, p95 = percentiles(hashing)
    s50, s95 = percentiles(sending)
    return {"seconds": p50, "p95_seconds": p95, "rss_mib": rss, "samples": len(hashing), "hash_seconds": hashed_at,
            "sending_p50_seconds": s50, "sending_p95_seconds": s95, "sending_samples": len(sending)}, {}


def percentiles(samples):
    """p50 and p95 of `samples` (NaN for none)."""
    if not samples:
        return float("nan"), float("nan")
    samples = sorted(samples)
    return statistics.median(samples), samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]


def w6(scratch):
    """One source, N = 1, 2, 4 and 7 receivers, each host in its own
    network namespace on its own 200 Mbit/s link (bench/lab.py): the time
    until every receiver holds a 256 MiB file, and separately 1,000 small
    files, put into the source's folder once all nodes are connected; the
    bytes the source sent on its link meanwhile, and the CPU all nodes
    used (the links are not the only limit: eight nodes share the cores).
    `BENCH_W6=7` runs only that N (and N = 1), `BENCH_W6_KIND=small` only
    that content."""
    big = max(1 << 20, int((256 << 20) * SCALE))
    small = max(10, int(1000 * SCALE))
    counts = [1, 2, 4, 7]
    if os.environ.get("BENCH_W6"):
        counts = sorted({1, *(int(n) for n in os.environ["BENCH_W6"].split(","))})
    the_lab = lab.Lab(1 + max(counts))
    results = {}
    try:
        for n in counts:
            for what, content_bytes, make in [
                ("big", big, lambda d: make_big_file(d / "big.bin", big)),
                ("small", None, lambda d: make_small_tree(d / "small", small, 10, seed=6)),
            ]:
                if os.environ.get("BENCH_W6_KIND", what) != what:
                    continue
                r = swarm_run(scratch / f"{what}-{n}", the_lab.hosts[: n + 1], make)
                content = content_bytes or r["content_bytes"]
                results[f"W6 {what}, N = {n}"] = {**r, "source_ratio": r["source_bytes"] / content}
    finally:
        the_lab.close()
    for key, r in results.items():
        one = results[key.rsplit("=", 1)[0] + "= 1"]
        r["ratio_to_one"] = r["seconds"] / one["seconds"]
    return results, {}


def swarm_run(scratch, hosts, make):
    """Start a node on each of `hosts` (empty folders), wait until all are
    connected, then put `make`'s content in the first one's folder (made
    aside and moved in) and time until every node holds the same tree."""
    scratch.mkdir(parents=True)
    staging = scratch / "staging"
    staging.mkdir()
    make(staging)
    content_bytes = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())
    dirs = [scratch / f"h{i}" for i in range(len(hosts))]
    for d in dirs:
        d.mkdir()
    nodes = [Node(d, scratch, host=h) for d, h in zip(dirs, hosts)]
    try:
        for node in nodes:
            node.wait_for("listening")
        peers = len(nodes) - 1
        wait(lambda: all(len(node.status()["peers"]) == peers for node in nodes), "every node connected", every=0.1)
        settle_disk()
        source = nodes[0]
        sent_before = hosts[0].bytes_sent()
        cpu_before = sum(cpu_seconds(node.proc.pid) for node in nodes)
        start = time.monotonic()
        for item in staging.iterdir():
            os.rename(item, source.dir / item.name)

        def done():
            s = source.status()
            if s.get("hashing", 0) or s["files"] == 0:
                return False
            return all(node.status()["digest"] == s["digest"] for node in nodes[1:])

        wait(done, "every receiver to hold the content", every=0.05)
        took = time.monotonic() - start
        cpu = sum(cpu_seconds(node.proc.pid) for node in nodes) - cpu_before
        return {"seconds": took, "source_bytes": hosts[0].bytes_sent() - sent_before, "content_bytes": content_bytes,
                "cpu_seconds": cpu,
                "rss_mib": max(node.rss() for node in nodes)}
    finally:
        for node in nodes:
            node.stop()


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


# ----- small: the first sync of a big tree of small files ---------------------
#
# Issue "Faster than rsync where users feel it": 200 folders of 1,000 files
# (200,000 x BENCH_SCALE paths), file i holding 64 + (i mod 512) bytes, the
# scale workload's tree. Two nodes, B empty, dialling A; against a plain
# `rsync -a` (no --fsync) and `tar | tar` of the same tree on the same disk.
# Each run does all three in turn (A B C, A B C: the disk swings 2x between
# runs, so only ratios within a run compare); BENCH_REPEAT runs (5 for the
# issue). The source tree is made once; destinations are never deleted
# before the end (see `main`).

SMALL_PATHS = max(2_000, int(200_000 * SCALE))
_small_source = {}  # the scratch root -> (source folder, tree)


def small_source(scratch_root):
    if scratch_root not in _small_source:
        src = scratch_root / "small-src"
        src.mkdir()
        tree = ScaleTree(SMALL_PATHS, seed=13)
        tree.populate(src)
        _small_source[scratch_root] = (src, tree)
    return _small_source[scratch_root]


def small_first_sync(scratch):
    src, tree = small_source(scratch.parent)
    content = sum(len(tree.content(i)) for i in range(tree.files))
    excluded = f"/{STATE_DIR}"

    a = Node(src, scratch, extra=SCALE_NODE_FLAGS)
    a.wait_for("listening")
    b_dir = scratch / "b"
    b_dir.mkdir()

    def dirsync_run():
        start = time.monotonic()
        b = Node(b_dir, scratch, peers=[a], extra=SCALE_NODE_FLAGS)
        digest = a.status()["digest"]
        done, _ = poll_status(b, agrees(digest), "B to hold A's tree")
        return {"seconds": done - start, "rss_mib": b.rss(), "nodes": [b]}

    r = measure(dirsync_run)
    stop_all(r)
    a.stop()
    tree.check(src, b_dir)
    r["content_bytes"] = content
    r["wire_per_content"] = r["wire_bytes"] / content

    def rsync_run():
        dst = scratch / "rsync"
        start = time.monotonic()
        subprocess.run(["rsync", "-a", f"--exclude={excluded}", f"{src}/", f"{dst}/"], check=True)
        return {"seconds": time.monotonic() - start}

    def tar_run():
        dst = scratch / "tar"
        dst.mkdir()
        start = time.monotonic()
        subprocess.run(f"tar -C {src} --exclude=./{STATE_DIR} -cf - . | tar -C {dst} -xf -", shell=True, check=True)
        return {"seconds": time.monotonic() - start}

    refs = {"rsync -a": measure(rsync_run), "tar-to-tar": measure(tar_run)}
    return r, refs


# ----- scale: issue "A million files" ---------------------------------------
#
# Two nodes, A with a tree of SCALE_PATHS paths, B empty, B dialling A
# (--no-discovery: no announcements on the wire). What is measured, each
# against the target (the targets are for 1,000,000 paths):
# the initial sync (time until B's status digest equals A's, its rate
# against the same at 5,000 paths, peak RSS), RSS at rest, CPU for one file
# change at rest, a restart of B with 0 changes (wire bytes, time until the
# digests agree after B's local scan, the scan itself, files hashed) and a
# restart of B after 1,000 changes made on A while it was down.
#
# The nodes run with --rescan-interval BENCH_RESCAN (default 3600 s): the
# periodic full rescan is a cost of its own (the restart scan measures it)
# and must not land in the 5 s CPU windows at random. Agreement is read
# from the nodes' status (one walk of the index per question at a million
# paths), asked often at first and then every 2% of the time waited.

SCALE_PATHS = max(2_000, int(1_000_000 * SCALE))
SCALE_REF_PATHS = 5_000  # the rate at 1M paths is compared with this one's
SCALE_FILES_PER_FOLDER = 1_000
SCALE_CHANGES = 1_000  # files changed on A while B is down
ENTRY_WIRE_BYTES = 250  # an estimate of one index entry on the wire
SCALE_TIMEOUT = max(TIMEOUT, SCALE_PATHS / 100)  # 10,000 s at a million paths
SCALE_IDLE = 5.0  # seconds idle before RSS at rest; each CPU window
RESCAN = os.environ.get("BENCH_RESCAN", "3600")
SCALE_NODE_FLAGS = ("--rescan-interval", RESCAN)
OPT_IN = ("scale",)  # workloads that run only when BENCH_ONLY names them
_missing_counters: set[str] = set()  # status counters asked for but absent


class ScaleTree:
    """`paths` paths: folders of ~1,000 files of 64-575 bytes, folders and
    files together `paths`. A file's path and content are made from its
    number (content version 0 at first, higher for changes), so no list of
    a million names is ever held."""

    def __init__(self, paths, seed=11):
        self.paths = paths
        self.folders = max(1, -(-paths // (SCALE_FILES_PER_FOLDER + 1)))
        self.files = paths - self.folders
        self.seed = seed
        self._pool = random.Random(seed).randbytes(1 << 20)

    def rel(self, i):
        return f"d{i * self.folders // self.files:04d}/f{i:07d}.bin"

    def content(self, i, version=0):
        x = ((i + 1) * 0x9E3779B1 ^ (version + self.seed) * 0x85EBCA6B) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
        x ^= x >> 12
        size = 64 + x % 512
        off = (x >> 9) % (len(self._pool) - 576)
        # The number and version first: no two files, no two versions alike.
        return i.to_bytes(4, "little") + version.to_bytes(4, "little") + self._pool[off : off + size - 8]

    def write(self, root, i, version=0):
        fd = os.open(os.path.join(root, self.rel(i)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, self.content(i, version))
        finally:
            os.close(fd)

    def populate(self, root):
        start = time.monotonic()
        for f in range(self.folders):
            os.mkdir(os.path.join(root, f"d{f:04d}"))
        for i in range(self.files):
            self.write(root, i)
            if i and i % 200_000 == 0:
                print(f"#   {i:,} of {self.files:,} files written", file=sys.stderr, flush=True)
        print(f"#   tree of {self.paths:,} paths made in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)

    def check(self, a_dir, b_dir):
        """B holds A's tree: the whole tree compared up to 100,000 paths, else
        every folder's file count and a sample of 1,000 files' bytes."""
        if self.paths <= 100_000:
            if tree_digest(b_dir) != tree_digest(a_dir):
                raise RuntimeError(f"{b_dir} differs from {a_dir}")
            return
        count = lambda d: sum(1 for e in os.scandir(d) if not e.name.startswith("."))
        for f in range(self.folders):
            if count(Path(a_dir) / f"d{f:04d}") != count(Path(b_dir) / f"d{f:04d}"):
                raise RuntimeError(f"d{f:04d}: another number of files in {b_dir} than in {a_dir}")
        for i in random.Random(self.seed + 2).sample(range(self.files), 1_000):
            if (Path(b_dir) / self.rel(i)).read_bytes() != (Path(a_dir) / self.rel(i)).read_bytes():
                raise RuntimeError(f"{self.rel(i)} differs between {a_dir} and {b_dir}")


def poll_status(node, cond, what, timeout=SCALE_TIMEOUT):
    """Ask `node` its status until cond(status); returns (the monotonic time
    the answer came, the status). Asks every 5 ms at first, then every 2% of
    the time waited so far (at most every second)."""
    start = time.monotonic()
    while True:
        try:
            s = node.status()
        except (OSError, ValueError):
            s = None
        now = time.monotonic()
        if s is not None and cond(s):
            return now, s
        if node.proc.poll() is not None:
            raise RuntimeError(f"node exited with {node.proc.returncode} while waiting for {what}; see {node.log}")
        if now - start > timeout:
            raise TimeoutError(f"timed out waiting for {what} ({node.log})")
        time.sleep(min(1.0, max(0.005, (now - start) / 50)))


def agrees(digest):
    """The node holds `digest` and has heard the same from a peer."""
    return lambda s: s["digest"] == digest and any(p.get("digest") == digest for p in s["peers"])


def counter(status, name):
    """A counter of the status; 0 (and noted) when this build lacks it."""
    counters = status.get("counters", {})
    if name not in counters:
        _missing_counters.add(name)
    return counters.get(name, 0)


def settled_digest(node, old):
    """A's digest once it took in changes made on its disk: different from
    `old`, then the same for a second."""
    last, since = old, time.monotonic()
    while True:
        d = poll_status(node, lambda s: True, "a status")[1]["digest"]
        now = time.monotonic()
        if d != last:
            last, since = d, now
        elif d != old and now - since >= 1.0:
            return d
        if now - since > SCALE_TIMEOUT:
            raise TimeoutError(f"{node.dir}: digest did not settle after changes")
        time.sleep(0.2)


def scale_initial_sync(tree, a_dir, b_dir, scratch):
    """Start A on its tree (made once per bench run, the state of a previous
    repeat removed), then B empty; time until B's digest equals A's.
    Returns the nodes, A's digest and the figures."""
    if a_dir.exists():
        shutil.rmtree(a_dir / STATE_DIR, ignore_errors=True)
    else:
        print(f"# making a tree of {tree.paths:,} paths in {a_dir}", file=sys.stderr, flush=True)
        a_dir.mkdir(parents=True)
        tree.populate(a_dir)
    b_dir.mkdir(parents=True)
    a = Node(a_dir, scratch, peers=[], extra=SCALE_NODE_FLAGS)
    r = {"a_first_scan_s": a.wait_for("listening", timeout=SCALE_TIMEOUT), "a_first_scan_peak_mib": a.rss()}
    digest = poll_status(a, lambda s: True, "A's status")[1]["digest"]
    settle_disk()
    r["peak_reset"] = float(reset_peak_rss(a.proc.pid))
    before = lo_tx_bytes()
    start = time.monotonic()
    b = Node(b_dir, scratch, peers=[a], extra=SCALE_NODE_FLAGS)
    end, s = poll_status(b, agrees(digest), f"B to hold A's {tree.paths:,} paths")
    r["sync_wire_bytes"] = lo_tx_bytes() - before
    r["sync_s"] = end - start
    r["sync_rate"] = tree.paths / r["sync_s"]
    r["a_sync_peak_mib"], r["b_sync_peak_mib"] = a.rss(), b.rss()
    if s["files"] != tree.files:
        raise RuntimeError(f"B's status counts {s['files']} files, the tree has {tree.files}")
    tree.check(a_dir, b_dir)
    return a, b, digest, r


def scale_restart(a, b, digest, scratch):
    """Start B again (after it was stopped): its local scan (until it logs
    `listening`), then until its digest and the one it heard from A both are
    `digest`; the loopback bytes of all that."""
    settle_disk()
    before = lo_tx_bytes()
    start = time.monotonic()
    nb = Node(b.dir, scratch, peers=[a], extra=SCALE_NODE_FLAGS)
    nb.wait_for("listening", timeout=SCALE_TIMEOUT)
    scanned = time.monotonic()
    end, s = poll_status(nb, agrees(digest), "B's digest to agree with A's after a restart")
    r = {
        "wire_bytes": lo_tx_bytes() - before,
        "scan_s": scanned - start,
        "agree_s": end - scanned,
        "total_s": end - start,
        "files_hashed": counter(s, "files_hashed"),
        "entries_received": counter(s, "index_entries_received"),
        "content_bytes": counter(s, "content_bytes_received"),
    }
    return nb, r


def scale(scratch):
    runs_root = scratch.parent  # A's trees are made once per bench run
    tree, ref = ScaleTree(SCALE_PATHS), ScaleTree(SCALE_REF_PATHS, seed=12)
    need_bytes, need_inodes = (REPEAT + 1) * tree.paths * 4096, (REPEAT + 1) * tree.paths
    st = os.statvfs(scratch)
    if st.f_bavail * st.f_frsize < need_bytes or st.f_favail < need_inodes:
        print(f"# warning: the scale workload may need ~{need_bytes / 2**30:.0f} GiB and {need_inodes:,} inodes "
              f"in {scratch} (A's tree and one B per repeat)", file=sys.stderr, flush=True)
    out = {"paths": tree.paths, "files": tree.files, "folders": tree.folders}
    nan = float("nan")

    # The same initial sync at 5,000 paths, for the rate ratio.
    a, b, _, r = scale_initial_sync(ref, runs_root / "scale-ref-a", scratch / "ref-b", scratch)
    out["ref_sync_s"], out["ref_sync_rate"] = r["sync_s"], r["sync_rate"]
    a.stop()
    b.stop()

    a, b, digest, r = scale_initial_sync(tree, runs_root / "scale-a", scratch / "b", scratch)
    out.update(r)
    out["rate_ratio"] = r["sync_rate"] / out["ref_sync_rate"]

    # At rest.
    time.sleep(SCALE_IDLE)
    out["a_rest_mib"], out["b_rest_mib"] = rss_mib(a.proc.pid), rss_mib(b.proc.pid)
    # The index on disk (committed at least every 2 s, so settled by now).
    db = b.dir / ".dirsync" / "index.redb"
    out["b_index_bytes"] = db.stat().st_size if db.exists() else nan

    # CPU for one file change: a window with the change less an idle one.
    def cpu():
        return cpu_seconds(a.proc.pid), cpu_seconds(b.proc.pid)

    c0 = cpu()
    time.sleep(SCALE_IDLE)
    c1 = cpu()
    idle = [(y - x) / SCALE_IDLE for x, y in zip(c0, c1)]  # CPU seconds per second
    out["a_idle_cpu_ms_per_s"], out["b_idle_cpu_ms_per_s"] = idle[0] * 1000, idle[1] * 1000
    i = tree.files // 2
    new, target = tree.content(i, 1), b.dir / tree.rel(i)

    def arrived():
        try:
            return target.read_bytes() == new
        except OSError:
            return False

    c0 = cpu()
    start = time.monotonic()
    tree.write(a.dir, i, 1)
    out["change_latency_s"] = wait(arrived, "one changed file to reach B", SCALE_TIMEOUT)
    time.sleep(max(0.0, start + SCALE_IDLE - time.monotonic()))
    c1 = cpu()
    window = time.monotonic() - start
    out["a_change_cpu_ms"], out["b_change_cpu_ms"] = (
        ((y - x) - rate * window) * 1000 for x, y, rate in zip(c0, c1, idle)
    )
    digest = poll_status(a, lambda s: True, "A's status")[1]["digest"]
    poll_status(b, agrees(digest), "the digests to agree after one change")

    # Restart of B, nothing changed anywhere: also the restart scan of an
    # unchanged tree.
    b.terminate(SCALE_TIMEOUT)
    b, r = scale_restart(a, b, digest, scratch)
    out.update({f"r0_{k}": v for k, v in r.items()})

    # Restart of B after 1,000 files changed on A while it was down.
    b.terminate(SCALE_TIMEOUT)
    changes = min(SCALE_CHANGES, tree.files // 2)
    for j in random.Random(tree.seed + 1).sample(range(tree.files), changes):
        tree.write(a.dir, j, 2)
    digest = settled_digest(a, digest)
    b, r = scale_restart(a, b, digest, scratch)
    out.update({f"r1k_{k}": v for k, v in r.items()})
    out["r1k_changes"] = changes
    # The files' content travels too: the entries are what is left.
    out["r1k_ratio"] = (r["wire_bytes"] - r["content_bytes"]) / (changes * ENTRY_WIRE_BYTES)
    out["r1k_ratio_with_content"] = r["wire_bytes"] / (changes * ENTRY_WIRE_BYTES)
    tree.check(a.dir, b.dir)
    a.stop()
    b.stop()
    return out, {}


def scale_table(r):
    """The scale workload's table: each figure next to the issue's target."""
    nan = float("nan")
    g = lambda k: r.get(k, nan)
    mib = lambda v: f"{v:.1f} MiB"
    ms = lambda v: f"{v:.1f} ms"
    sec = lambda v: f"{v:.2f} s"
    kib = lambda v: f"{v / 1024:,.1f} KiB"

    def met(ok):
        return "n/a" if ok is None else ("met" if ok else "NOT MET")

    missing = lambda name: name in _missing_counters
    n = int(g("paths"))
    rows = [
        (f"initial sync of {n:,} paths: until B's digest equals A's", f"{sec(g('sync_s'))}, {g('sync_rate'):,.0f} paths/s, wire {g('sync_wire_bytes') / 1e6:,.1f} MB", "", None),
        (f"initial sync of {SCALE_REF_PATHS:,} paths", f"{sec(g('ref_sync_s'))}, {g('ref_sync_rate'):,.0f} paths/s", "", None),
        (f"initial sync rate at {n:,} vs at {SCALE_REF_PATHS:,} paths", f"{g('rate_ratio'):.2f}x", ">= 0.8x", g("rate_ratio") >= 0.8),
        ("peak RSS of A's first scan (no index yet)", mib(g("a_first_scan_peak_mib")), "<= 128 MiB", g("a_first_scan_peak_mib") <= 128),
        ("peak RSS during the initial sync, A" + ("" if g("peak_reset") == 1 else " (incl. its first scan)"), mib(g("a_sync_peak_mib")), "<= 128 MiB", g("a_sync_peak_mib") <= 128),
        ("peak RSS during the initial sync, B", mib(g("b_sync_peak_mib")), "<= 128 MiB", g("b_sync_peak_mib") <= 128),
        (f"RSS at rest ({SCALE_IDLE:.0f} s idle after the sync), A", mib(g("a_rest_mib")), "<= 64 MiB", g("a_rest_mib") <= 64),
        (f"RSS at rest ({SCALE_IDLE:.0f} s idle after the sync), B", mib(g("b_rest_mib")), "<= 64 MiB", g("b_rest_mib") <= 64),
        ("CPU at rest (the baseline), A / B", f"{g('a_idle_cpu_ms_per_s'):.2f} / {g('b_idle_cpu_ms_per_s'):.2f} ms per s", "", None),
        ("CPU for one file change at rest, A", ms(g("a_change_cpu_ms")), "<= 5 ms", g("a_change_cpu_ms") <= 5),
        ("CPU for one file change at rest, B", ms(g("b_change_cpu_ms")), "<= 5 ms", g("b_change_cpu_ms") <= 5),
        ("one file change: until B has it", ms(g("change_latency_s") * 1000), "", None),
        ("B's index on disk (index.redb)", f"{g('b_index_bytes') / 2**20:,.1f} MiB, {g('b_index_bytes') / n:,.0f} B per path", "", None),
        ("restart of B, 0 changes: wire until the digests agree", kib(g("r0_wire_bytes")), "<= 64 KiB", g("r0_wire_bytes") <= 64 * 1024),
        ("restart of B, 0 changes: after B's scan, until the digests agree", f"{sec(g('r0_agree_s'))} (start to agreement {sec(g('r0_total_s'))})", "<= 1 s", g("r0_agree_s") <= 1),
        (f"restart scan of {n:,} unchanged paths (B's start to `listening`)", sec(g("r0_scan_s")), "<= 10 s", g("r0_scan_s") <= 10),
        ("files hashed by that restart (counter files_hashed)", f"{g('r0_files_hashed'):,.0f}" + (" (no such counter)" if missing("files_hashed") else ""), "0", None if missing("files_hashed") else g("r0_files_hashed") == 0),
        (f"restart of B after {g('r1k_changes'):,.0f} changes on A: wire until the digests agree", f"{kib(g('r1k_wire_bytes'))}, of which file content {kib(g('r1k_content_bytes'))}", "", None),
        (f"  that wire less the content / ({g('r1k_changes'):,.0f} x {ENTRY_WIRE_BYTES} B per entry)", f"{g('r1k_ratio'):.2f}x (with the content {g('r1k_ratio_with_content'):.2f}x)", "<= 2x", g("r1k_ratio") <= 2),
        ("  index entries B received (counter index_entries_received)", f"{g('r1k_entries_received'):,.0f}" + (" (no such counter)" if missing("index_entries_received") else ""), f"~{g('r1k_changes'):,.0f}", None),
        ("  B's scan / after it, until the digests agree", f"{sec(g('r1k_scan_s'))} / {sec(g('r1k_agree_s'))}", "", None),
    ]
    lines = [
        f"scale (issue \"A million files\"): {n:,} paths ({g('folders'):,.0f} folders of ~{SCALE_FILES_PER_FOLDER:,} files of 64-575 bytes), "
        f"median of {REPEAT} runs; the targets are for 1,000,000 paths",
        "| measure | value | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {value} | {target} | {met(ok)} |" for name, value, target, ok in rows]
    if _missing_counters:
        lines.append(f"status counters not found (taken as 0): {', '.join(sorted(_missing_counters))}")
    return lines


WORKLOADS = [
    ("W1 5,000 small files, initial sync", w1),
    ("small 200,000 x BENCH_SCALE files of 64-575 B, first sync", small_first_sync),
    ("W2/W3/renames", w2_w3_renames),
    ("W2k 512 MiB file with a cluster key", w2_keyed),
    ("W2r 512 MiB file under a bandwidth limit", w2_limited),
    ("W4 64-byte file latency (p50)", w4),
    ("W4h 64-byte file latency while a 4 GiB file hashes (p50)", w4_hashing),
    ("W5 1,000 files to two peers", w5),
    ("W6 one source to N receivers, 200 Mbit/s links", w6),
    ("100,000 files, initial sync", w100k),
    ("scale 1,000,000 x BENCH_SCALE paths", scale),  # opt-in (OPT_IN)
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
    elif dirsync is not None and secs:
        ratio = f"time {dirsync['seconds'] / secs:.2f}"
    notes = []
    if "p95_seconds" in r:
        notes.append(f"p95 {r['p95_seconds'] * 1000:.1f} ms")
    if "hash_seconds" in r:
        notes.append(f"{r['samples']:.0f} samples while the hash ran ({r['hash_seconds']:.1f} s); while A then sent it: "
                     f"p50 {r['sending_p50_seconds'] * 1000:.1f} ms, p95 {r['sending_p95_seconds'] * 1000:.1f} ms "
                     f"({r['sending_samples']:.0f} samples)")
    if "rate_ratio" in r:
        notes.append(f"{r['rate_ratio']:.3f}x the limit end to end, {r['steady_ratio']:.3f}x while content flows; "
                     f"64-byte files the other way meanwhile: p50 "
                     f"{r['ping_p50_seconds'] * 1000:.1f} ms, p95 {r['ping_p95_seconds'] * 1000:.1f} ms ({r['ping_samples']:.0f})")
    if "source_ratio" in r:
        notes.append(f"{r['ratio_to_one']:.2f}x the N = 1 time; the source sent {r['source_ratio']:.2f}x the content; "
                     f"all nodes used {r['cpu_seconds']:.1f} CPU-s ({r['cpu_seconds'] / os.cpu_count():.2f} s on "
                     f"{os.cpu_count()} cores)")
    if "wire_per_content" in r:
        notes.append(f"wire {r['wire_per_content']:.2f}x the content ({r['content_bytes'] / 1e6:.1f} MB)")
    if "ratio_to_two_nodes" in r:
        notes.append(f"{r['ratio_to_two_nodes']:.2f}x the two-node time")
    return f"| {name} | {tool} | {secs * 1000:.1f} ms | {wire / 1e6:.3f} MB | {rss:.1f} MiB | {ratio} | {'; '.join(notes)} |"


def main():
    if not BIN.exists():
        sys.exit(f"{BIN} not found: build with `cargo build --release` (just bench does)")
    if shutil.which("rsync") is None and not (ONLY and all(w.startswith(OPT_IN) for w in ONLY)):
        sys.exit("rsync not found: `apt-get install rsync` (just bench does)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    # One scratch tree for the whole run, removed only at the end: ext4 (here
    # without a journal) skips inodes freed in the last minute when it makes
    # new files, so creating thousands of files right after deleting
    # thousands gets several times slower; deleting each run's tree would
    # slow down whichever tool runs next.
    forget_freed_inodes()
    scratch_root = Path(tempfile.mkdtemp(prefix="dirsync-bench-"))
    try:
        run_workloads(scratch_root)
    finally:
        for node in list(Node.running):
            node.stop()
        shutil.rmtree(scratch_root, ignore_errors=True)


def forget_freed_inodes():
    """ext4 without a journal (this disk) skips, when it makes a file, every
    free inode whose table block in the buffer cache says it was freed
    lately (fs/ext4/ialloc.c, recently_deleted): after a big delete (a
    previous bench's scratch, a cargo build) making files was 3-6x slower
    for minutes, whichever tool ran (20,000 files: 4.1 s, then 1.1 s once
    the cache was dropped). Drop the cache once before the run, where
    allowed (root); the scratch tree is never deleted before the end."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        print(f"# could not drop the page cache ({e}): file creation may be slow after recent deletes", file=sys.stderr, flush=True)


def keep_logs(run_dir, title, i):
    """Copy the node logs of a failed run where the scratch tree's removal
    does not reach them; returns that folder."""
    kept = ROOT / "target/bench-failed" / f"{title.split()[0].replace('/', '-')}-{i}"
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for log in Path(run_dir).rglob("node-*.log"):
        shutil.copy(log, kept / f"{log.parent.name}-{log.name}")
    return kept


def run_workloads(scratch_root):
    table, scale_r, failed = {}, None, []
    for title, fn in WORKLOADS:
        if ONLY and not any(title.startswith(w) for w in ONLY):
            continue
        if not ONLY and title.startswith(OPT_IN):
            continue
        runs_main, runs_ref = [], []
        for i in range(REPEAT):
            tmp = scratch_root / f"{title.split()[0].replace('/', '-')}-{i}"
            tmp.mkdir()
            print(f"# {title}: run {i + 1}/{REPEAT}", file=sys.stderr, flush=True)
            try:
                main_r, ref_r = fn(tmp)
            except Exception as e:  # noqa: BLE001  (one workload's failure must not lose the others' figures)
                for node in list(Node.running):
                    node.stop()
                kept = keep_logs(tmp, title, i)
                failed.append(f"{title}, run {i + 1}: {type(e).__name__}: {e} (node logs in {kept})")
                print(f"# FAILED: {failed[-1]}", file=sys.stderr, flush=True)
                break
            runs_main.append(main_r)
            runs_ref.append(ref_r)
        if not runs_main:
            continue
        if fn is scale:
            scale_r = median_of(runs_main)
        elif "W2/W3" in title or fn in (w6, w2_limited):
            for key in runs_main[0]:
                table[key] = {"dirsync": median_of([r[key] for r in runs_main])}
                for tool in runs_ref[0].get(key, {}):
                    table[key][tool] = median_of([r[key][tool] for r in runs_ref])
        else:
            table[title] = {"dirsync": median_of(runs_main)}
            for tool in runs_ref[0]:
                table[title][tool] = median_of([r[tool] for r in runs_ref])
    lines = [f"dirsync benchmarks: median of {REPEAT} runs, scale {SCALE}, nodes on loopback in a private network namespace",
             "wire = every loopback byte of the run, TCP/IP headers included; dirsync/ref = dirsync's figure divided by the reference's"]
    if table:
        lines += ["| workload | tool | time | wire | peak RSS | dirsync/ref | notes |", "|---|---|---|---|---|---|---|"]
    for name, tools in table.items():
        lines.append(fmt_row(name, "dirsync", tools["dirsync"]))
        lines += [fmt_row(name, tool, r, tools["dirsync"]) for tool, r in tools.items() if tool != "dirsync"]
    if scale_r is not None:
        lines += [""] + scale_table(scale_r)
    print("\n".join(lines))
    out = ROOT / "target/bench.json"
    out.parent.mkdir(exist_ok=True)
    results = {"repeat": REPEAT, "scale": SCALE, "results": table}
    if scale_r is not None:
        results["scale_workload"] = {**scale_r, "missing_counters": sorted(_missing_counters)}
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")
    if failed:
        print("\nfailed:\n" + "\n".join(f"- {f}" for f in failed))
        sys.exit(1)


if __name__ == "__main__":
    main()

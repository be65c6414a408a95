#!/usr/bin/env python3
"""Mixed protocol versions on one network, then a rolling upgrade.

Builds the last commit of main whose newest protocol version is the one
before ours (the table in docs/PROTOCOL.md names it) in a worktree, and
runs four real nodes on loopback: two of that older build, two of this one.
They go through creates, edits, deletes, a rename and a conflict; then the
old nodes are upgraded one at a time while changes go on. At every step
the four trees must agree on what the older version can hold (files, their
content, mode and extended attributes, folders, symlinks: every node runs
with --xattrs), and nothing written may be lost. The step of what only the
new version does changes with each protocol version (8: messages written
compact between new nodes, whole to old ones, which every node's status
shows as the version it speaks with each peer).

Run with `just mixed` (also part of `just e2e`). Knobs: MIXED_OLD_COMMIT
(another commit to build as the old side), MIXED_TIMEOUT (seconds per
convergence, default 60).
"""

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopback import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = float(os.environ.get("MIXED_TIMEOUT", "60"))
STATE = ".dirsync"


def sh(*args, cwd=ROOT, env=None):
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=cwd, env=env, check=True)


# The version of the old side: the one before ours.
OLD_VERSION = int(re.search(r"PROTOCOL_VERSION: u32 = (\d+)", (ROOT / "src/wire/compat.rs").read_text()).group(1)) - 1


def old_commit() -> str:
    if os.environ.get("MIXED_OLD_COMMIT"):
        return os.environ["MIXED_OLD_COMMIT"]
    doc = (ROOT / "docs/PROTOCOL.md").read_text()
    row = re.search(rf"^\| {OLD_VERSION} \|.*?`([0-9a-f]{{40}})`", doc, re.M)
    if not row:
        sys.exit(f"docs/PROTOCOL.md names no commit for protocol version {OLD_VERSION}")
    return row.group(1)


def have_commit(commit: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True).returncode == 0


def fetch_commit(commit: str) -> bool:
    """Whether `commit` is here, fetched if this clone lacks it (a shallow
    clone, as some CI systems make)."""
    if have_commit(commit):
        return True
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for args in (["fetch", "--quiet", "--unshallow"] if shallow == "true" else [], ["fetch", "--quiet", "origin", commit]):
        if args:
            subprocess.run(["git", *args], cwd=ROOT)
            if have_commit(commit):
                return True
    return False


def build_old(commit: str) -> Path:
    """The old build, cached under target/mixed by commit."""
    base = ROOT / "target/mixed"
    binary = base / f"target-{commit[:12]}/release/dirsync"
    if binary.exists():
        return binary
    tree = base / f"src-{commit[:12]}"
    if not tree.exists():
        base.mkdir(parents=True, exist_ok=True)
        sh("git", "worktree", "add", "--force", "--detach", tree, commit)
    env = dict(os.environ, CARGO_TARGET_DIR=str(base / f"target-{commit[:12]}"))
    sh("nice", "cargo", "build", "--release", "--bin", "dirsync", cwd=tree, env=env)
    return binary



class Node:
    def __init__(self, name: str, binary: Path, directory: Path, bport: int, logs: Path):
        self.name, self.binary, self.dir, self.bport = name, binary, directory, bport
        self.port = free_port()
        self.logs = logs
        self.proc = None

    @property
    def new(self) -> bool:
        return self.binary == NEW

    def start(self):
        self.port = free_port()
        log = open(self.logs / f"{self.name}.log", "a")
        log.write(f"=== start {self.binary}\n")
        log.flush()
        extra = ["--xattrs"]
        self.proc = subprocess.Popen(
            [str(self.binary), "-l", str(self.port), "-b", str(self.bport), "--broadcast-addr", "127.255.255.255", *extra, str(self.dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG="info"),
        )

    def stop(self):
        stop(self.proc)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict:
        out = subprocess.run([str(NEW), "status", "--json", str(self.dir)], capture_output=True, text=True)
        return json.loads(out.stdout) if out.returncode == 0 else {}


def user_xattrs(path: Path) -> tuple:
    try:
        names = sorted(n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user."))
        return tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)
    except OSError:
        return ()


def read_tree(directory: Path, full: bool) -> dict:
    """Path -> what it holds. `full`: extended attributes too; else files
    by content and mode, folders by mode, and symlinks."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        rel_dir = os.path.relpath(dirpath, directory)
        if rel_dir == STATE or rel_dir.startswith(STATE + "/"):
            continue
        for name in list(dirnames) + filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel == STATE or name.startswith(".dirsync-tmp-"):
                continue
            path = Path(dirpath) / name
            try:
                st = os.lstat(path)
                target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            except OSError:
                continue  # gone meanwhile: the next look tells
            mode = stat.S_IMODE(st.st_mode)
            attrs = user_xattrs(path) if full and target is None else ()
            if target is not None:
                tree[rel] = ("link", target)
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = ("dir", mode, attrs)
            elif stat.S_ISREG(st.st_mode):
                try:
                    digest = hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
                except OSError:
                    continue
                tree[rel] = ("file", digest, mode, attrs)
        dirnames[:] = [d for d in dirnames if not (rel_dir == "." and d == STATE)]
    return tree


def diff(a: dict, b: dict) -> list:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k)][:8]


class Cluster:
    def __init__(self, scratch: Path, old: Path):
        self.scratch = scratch
        self.logs = scratch / "logs"
        self.logs.mkdir()
        bport = free_port(socket.SOCK_DGRAM)
        self.nodes = []
        for i, binary in enumerate([old, old, NEW, NEW]):
            d = scratch / f"n{i}"
            d.mkdir()
            self.nodes.append(Node(f"n{i}", binary, d, bport, self.logs))
        # What every live file must hold at the end: path -> content.
        self.model = {}

    def write(self, i: int, rel: str, data: bytes, mode=None):
        p = self.nodes[i].dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, p)
        self.model[rel] = data

    def delete(self, i: int, rel: str):
        p = self.nodes[i].dir / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        self.model = {k: v for k, v in self.model.items() if k != rel and not k.startswith(rel + "/")}

    def converged(self, what: str):
        """Wait until the trees agree: all four on files, modes and links,
        the new nodes on everything (extended attributes are checked where
        they are set)."""
        deadline = time.time() + TIMEOUT
        while True:
            problems = []
            for n in self.nodes:
                if not n.alive():
                    sys.exit(f"{what}: {n.name} died; logs in {self.logs}")
            trees = [read_tree(n.dir, full=False) for n in self.nodes]
            for n, t in zip(self.nodes[1:], trees[1:]):
                d = diff(trees[0], t)
                if d:
                    problems.append(f"n0 vs {n.name} (files): {d}")
            new = [n for n in self.nodes if n.new]
            full = [read_tree(n.dir, full=True) for n in new]
            for n, t in zip(new[1:], full[1:]):
                d = diff(full[0], t)
                if d:
                    problems.append(f"{new[0].name} vs {n.name} (everything): {d}")
            if not problems:
                lost = [k for k, v in self.model.items() if self.read(0, k) != v]
                if lost:
                    sys.exit(f"{what}: converged, but writes are lost: {lost[:8]}")
                print(f"ok   {what} ({TIMEOUT - (deadline - time.time()):.1f} s)", flush=True)
                return
            if time.time() > deadline:
                sys.exit(f"{what}: no convergence within {TIMEOUT:.0f} s:\n  " + "\n  ".join(problems) + f"\nlogs in {self.logs}")
            time.sleep(0.25)

    def read(self, i: int, rel: str):
        try:
            return (self.nodes[i].dir / rel).read_bytes()
        except OSError:
            return None

    def in_sync_says_status(self, what: str):
        """Every new node's status shows each peer in sync (the digest it
        compares with an old peer leaves out what that peer cannot hold)."""
        deadline = time.time() + TIMEOUT
        while True:
            bad = []
            for n in (n for n in self.nodes if n.new):
                peers = n.status().get("peers", [])
                if len(peers) != len(self.nodes) - 1:
                    bad.append(f"{n.name}: {len(peers)} peers")
                bad += [f"{n.name}: peer {p['addr']} (protocol {p.get('protocol')}) differs" for p in peers if p.get("digest") != p.get("ours")]
            if not bad:
                print(f"ok   {what}", flush=True)
                return
            if time.time() > deadline:
                sys.exit(f"{what}: " + "; ".join(bad))
            time.sleep(0.5)


def main() -> int:
    global NEW
    commit = old_commit()
    print(f"== the old side: {commit}", flush=True)
    if not fetch_commit(commit):
        # Nothing to build the old side from: say so, as .ci/run does
        # without a docker engine, rather than fail on the environment.
        print(f"mixed versions: SKIPPED (commit {commit} is not in this clone and could not be fetched)", flush=True)
        return 0
    old = build_old(commit)
    sh("nice", "cargo", "build", "--release", "--bin", "dirsync")
    NEW = ROOT / "target/release/dirsync"
    scratch = Path(tempfile.mkdtemp(prefix="dirsync-mixed-"))
    c = Cluster(scratch, old)
    try:
        # Each node starts with files of its own.
        for i in range(4):
            c.write(i, f"seed/from-n{i}.txt", f"seed of n{i}".encode())
        c.write(2, "tools/run.sh", b"#!/bin/sh\necho hi\n", mode=0o755)
        for n in c.nodes:
            n.start()
        c.converged("the union, two old and two new nodes")

        # Live changes from either side.
        c.write(0, "docs/old-made.txt", b"made on an old node")
        c.write(3, "docs/new-made.txt", b"made on a new node")
        c.converged("creates")
        c.write(1, "docs/new-made.txt", b"edited on an old node")
        c.write(2, "docs/old-made.txt", b"edited on a new node")
        c.converged("edits")
        c.delete(0, "seed/from-n3.txt")
        c.delete(3, "seed/from-n0.txt")
        c.converged("deletes")
        os.rename(c.nodes[1].dir / "docs/old-made.txt", c.nodes[1].dir / "docs/renamed.txt")
        c.model["docs/renamed.txt"] = c.model.pop("docs/old-made.txt")
        c.converged("a rename")

        # A symlink and a mode: every version spoken holds them.
        os.symlink("../docs", c.nodes[2].dir / "tools/docs-link")
        c.write(0, "private/key.txt", b"secret", mode=0o600)
        c.converged("a symlink and a mode")
        assert os.readlink(c.nodes[1].dir / "tools/docs-link") == "../docs", "an old node holds the link"

        # Extended attributes: every version spoken holds them.
        os.setxattr(c.nodes[2].dir / "private/key.txt", "user.origin", b"n2", follow_symlinks=False)
        c.converged("an extended attribute among mixed versions")
        for i in range(4):
            assert user_xattrs(c.nodes[i].dir / "private/key.txt") == (("user.origin", b"n2"),), f"n{i} took it"

        # What only the new version does: compact messages (base64 hashes,
        # entries without what they imply) to the other new node, whole
        # ones to the old nodes; many small files both ways.
        for i in (0, 3):
            for k in range(300):
                c.write(i, f"small/from-n{i}/{k:03}.txt", f"small file {k} of n{i}".encode())
        c.converged("many small files from an old and a new node")
        c.in_sync_says_status("status: every peer in sync")
        for n in (n for n in c.nodes if n.new):
            spoken = sorted(p.get("protocol") for p in n.status().get("peers", []))
            assert spoken == [OLD_VERSION, OLD_VERSION, OLD_VERSION + 1], f"{n.name} speaks {spoken} with its peers"

        # A conflict: n0 (old) edits while stopped, n2 (new) edits too.
        c.nodes[0].stop()
        (c.nodes[0].dir / "docs/new-made.txt").write_bytes(b"offline edit on old n0")
        time.sleep(1.1)
        c.write(2, "docs/new-made.txt", b"later edit on new n2")
        c.nodes[0].start()
        c.model.pop("docs/new-made.txt")
        c.converged("a conflict between an old and a new node")
        tree = read_tree(c.nodes[1].dir, full=False)
        copies = [k for k in tree if "sync-conflict" in k]
        assert c.read(1, "docs/new-made.txt") == b"later edit on new n2", "the later edit won"
        assert any(c.read(1, k) == b"offline edit on old n0" for k in copies), f"no conflict copy: {sorted(tree)}"

        # The rolling upgrade: each old node in turn, while changes go on.
        for k, i in enumerate([0, 1]):
            c.nodes[i].stop()
            c.write(3, f"during-upgrade/{k}-a.txt", f"while n{i} upgrades".encode())
            c.nodes[i].binary = NEW
            c.nodes[i].start()
            c.write(1 - i if k == 0 else 2, f"during-upgrade/{k}-b.txt", b"more changes meanwhile")
            c.write(i, f"during-upgrade/{k}-c.txt", b"from the upgraded node")
            c.converged(f"n{i} upgraded")
        for i in [0, 1]:
            attrs = user_xattrs(c.nodes[i].dir / "private/key.txt")
            assert attrs == (("user.origin", b"n2"),), f"upgraded n{i} took the attribute: {attrs}"
        c.in_sync_says_status("status after the upgrade: all four in sync")
        print("mixed versions: all checks passed", flush=True)
        return 0
    finally:
        for n in c.nodes:
            n.stop()
        if os.environ.get("MIXED_KEEP"):
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


NEW = Path()

if __name__ == "__main__":
    sys.exit(main())

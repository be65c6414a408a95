"""A dirsync directory's synced tree, read from disk.

The one tree reader of the Python scripts: docker/e2e.py compares it with
the tree it expects, bench/bench.py polls its digest until two folders
agree. One walk and one rule for what is not synced, the same as the Rust
tests' reader (sim/src/tree.rs): the state folder `.dirsync/` at the top of
DIR and `.dirsync-tmp-*` temp files anywhere are left out. Symlinks are
not followed (reported as such).

The scripts import it with this folder on `sys.path`. Python 3.11
standard library only.
"""

import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

STATE_DIR, TMP_PREFIX = ".dirsync", ".dirsync-tmp-"


class Entry(NamedTuple):
    kind: str  # file | dir | symlink | other (dirs: no size, no mtime)
    size: int
    mtime_ns: int
    digest: str  # sha256 of the content ("" when not read), or the symlink target


DIR = Entry("dir", 0, 0, "")

_hashes: dict = {}


def entry_of(path, content=True) -> Entry:
    """What `path` holds. With `content`, a file's sha256, cached while its
    inode, size, mtime and ctime stay the same."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return Entry("symlink", 0, 0, os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return DIR
    if not stat.S_ISREG(st.st_mode):
        return Entry("other", 0, 0, "")
    if not content:
        return Entry("file", st.st_size, st.st_mtime_ns, "")
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _hashes[key] = h.hexdigest()
    return Entry("file", st.st_size, st.st_mtime_ns, _hashes[key])


def snapshot(root, content=True) -> dict:
    """Relative path (with `/`) -> Entry for everything under `root` but the
    state folder and temp files. A file that goes away while it is read is
    left out: the next poll sees the tree as it is then."""
    root = Path(root)
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root and STATE_DIR in dirnames:
            dirnames.remove(STATE_DIR)
        links = [d for d in dirnames if os.path.islink(here / d)]
        dirnames[:] = sorted(d for d in dirnames if d not in links and not d.startswith(TMP_PREFIX))
        for d in dirnames:
            tree[(here / d).relative_to(root).as_posix()] = DIR
        for name in filenames + links:
            if not name.startswith(TMP_PREFIX):
                try:
                    tree[(here / name).relative_to(root).as_posix()] = entry_of(here / name, content)
                except FileNotFoundError:
                    pass
    return tree


def digest(root) -> str:
    """A cheap digest of the tree under `root`: every path with its kind and
    a file's size, no content read. Two folders being synced have the same
    digest once they agree (a received file appears whole, by a rename)."""
    h = hashlib.blake2b()
    for rel, e in sorted(snapshot(root, content=False).items()):
        h.update(f"{rel}\0{e.kind}\0{e.size}\0{e.digest}\n".encode())
    return h.hexdigest()

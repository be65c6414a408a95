#!/usr/bin/env python3
"""How to make a batch of small received files durable: the alternatives
measured for the group commit (src/fs/temp.rs `make_all_durable`).

Each method writes N temp files of 1-16 KiB (BENCH_DURABLE_FILES, default
2,000) in a fresh folder, makes them durable, then renames them into place,
as a receiver does; the time per file is printed for each. Run it on the
filesystem dirsync will sync (the folder is made under DIR, default the
system's temp dir): `python3 bench/durability.py [DIR]`. Stdlib only.
"""

import ctypes
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

N = int(os.environ.get("BENCH_DURABLE_FILES", "2000"))
ROUNDS = int(os.environ.get("BENCH_REPEAT", "3"))
libc = ctypes.CDLL(None, use_errno=True)
SYNC_FILE_RANGE_WRITE = 2


def syncfs(fd):
    if libc.syncfs(fd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")


def sync_file_range_write(fd):
    libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), SYNC_FILE_RANGE_WRITE)


def write_all(folder, payloads):
    fds = []
    for i, data in enumerate(payloads):
        fd = os.open(folder / f".tmp-{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        fds.append(fd)
    return fds


def rename_all(folder, fds):
    for i, fd in enumerate(fds):
        os.close(fd)
        os.rename(folder / f".tmp-{i}", folder / f"file-{i}")
    dfd = os.open(folder, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def flush_each(flush, folder, payloads):
    fds = write_all(folder, payloads)
    for fd in fds:
        flush(fd)
    rename_all(folder, fds)


def fsync_each(folder, payloads):
    flush_each(os.fsync, folder, payloads)


def fsync_32_threads(folder, payloads):
    """What dirsync did before the group commit: up to 32 fsyncs at once."""
    fds = write_all(folder, payloads)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(os.fsync, fds))
    rename_all(folder, fds)


def fdatasync_each(folder, payloads):
    flush_each(os.fdatasync, folder, payloads)


def start_writeback_then_fdatasync(folder, payloads):
    fds = write_all(folder, payloads)
    for fd in fds:
        sync_file_range_write(fd)
    for fd in fds:
        os.fdatasync(fd)
    rename_all(folder, fds)


def one_syncfs(folder, payloads):
    """The group commit dirsync does: one syncfs for the batch."""
    fds = write_all(folder, payloads)
    syncfs(fds[0])
    rename_all(folder, fds)


def no_flush(folder, payloads):
    """The floor (and plain rsync): nothing is made durable."""
    rename_all(folder, write_all(folder, payloads))


METHODS = [no_flush, one_syncfs, start_writeback_then_fdatasync, fdatasync_each, fsync_32_threads, fsync_each]


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else None
    rng = random.Random(1)
    payloads = [rng.randbytes(rng.randint(1024, 16 * 1024)) for _ in range(N)]
    root = tempfile.mkdtemp(prefix="dirsync-durability-", dir=base)
    try:
        print(f"{N} files of 1-16 KiB, median of {ROUNDS}; on {root}")
        print("| method | ms per batch | us per file |")
        print("|---|---|---|")
        for method in METHODS:
            times = []
            for r in range(ROUNDS):
                folder = tempfile.mkdtemp(dir=root)
                os.sync()
                start = time.monotonic()
                method(Path(folder), payloads)
                times.append(time.monotonic() - start)
            t = sorted(times)[len(times) // 2]
            print(f"| {method.__name__} | {t * 1000:.0f} | {t / N * 1e6:.0f} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

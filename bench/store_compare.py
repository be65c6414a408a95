#!/usr/bin/env python3
"""SQLite, measured the way the index store (redb) is measured, for the
store comparison in docs/ARCHITECTURE.md (issue "A million files").

The same layout as `engine/index/store.rs`: entries (path -> ~100-byte
record), seqs (number -> path), hashes (content hash + path), committed in
durable transactions of 8192 changes (WAL, synchronous=FULL: every commit
fsyncs, as redb's Durability::Immediate does). Prints the time per commit
and the bytes per path on disk. The redb figures: `cargo bench --bench
micro index_commit_8192` and the `scale` workload of bench/bench.py.

    python3 bench/store_compare.py [PATHS]   (default 200,000)
"""
import os
import sqlite3
import sys
import tempfile
import time

PATHS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
BATCH = 8192


def main():
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "index.sqlite")
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE entries (path TEXT PRIMARY KEY, record BLOB) WITHOUT ROWID")
        con.execute("CREATE TABLE seqs (seq INTEGER PRIMARY KEY, path TEXT)")
        con.execute("CREATE TABLE hashes (key BLOB PRIMARY KEY) WITHOUT ROWID")
        record = os.urandom(100)
        times = []
        for start in range(0, PATHS, BATCH):
            t = time.perf_counter()
            con.execute("BEGIN")
            for i in range(start, min(start + BATCH, PATHS)):
                path = f"folder{i % 200}/file{i:07}.txt"
                h = i.to_bytes(32, "little")
                con.execute("INSERT OR REPLACE INTO entries VALUES (?, ?)", (path, record))
                con.execute("INSERT INTO seqs VALUES (?, ?)", (i + 1, path))
                con.execute("INSERT OR REPLACE INTO hashes VALUES (?)", (h + path.encode(),))
            con.execute("COMMIT")
            times.append(time.perf_counter() - t)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        size = os.path.getsize(db)
    times.sort()
    print(f"sqlite {sqlite3.sqlite_version}: {PATHS:,} paths, a commit of {BATCH} changes "
          f"median {times[len(times) // 2] * 1000:.1f} ms, {size / PATHS:.0f} B per path on disk")


if __name__ == "__main__":
    main()

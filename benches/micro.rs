//! Micro-benchmarks of the hot paths of a transfer, so regressions show:
//! the frame codec (small control frames and 1 MiB content chunks), blake3
//! hashing, and a delta's three steps (signature, diff, apply) on one 4 MiB
//! segment. Run with `cargo bench --bench micro` (or `just bench-micro`).

use dirsync::fs::delta::{apply_segment, FileSignature};
use dirsync::wire::{decode, encode, Entry, Hash, Kind, Message, RelPath, WantFile};
use divan::{black_box, Bencher};
use std::io::Cursor;

fn main() {
    divan::main();
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn entry(i: usize) -> Entry {
    Entry {
        path: RelPath::new(format!("folder{}/file{i:06}.txt", i % 50)).expect("valid path"),
        kind: Kind::File,
        deleted: false,
        size: 4096,
        mtime: 1_764_000_000_000_000_000 + i as i128,
        version: 1_764_000_000_000_000_000 + i as i128,
        hash: Hash::of(&i.to_le_bytes()),
        vector: Default::default(),
        by: Default::default(),
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    }
}

fn samples() -> Vec<(&'static str, Message)> {
    vec![
        ("file_end", Message::FileEnd),
        ("chunk_1mib", Message::Chunk { data: noise(1 << 20, 1) }),
        (
            "want_1000",
            Message::Want {
                files: (0..1000)
                    .map(|i| WantFile {
                        path: entry(i).path,
                        hash: dirsync::wire::WantedHash::from(entry(i).hash).prefix(),
                    })
                    .collect(),
            },
        ),
        (
            "index_1000",
            Message::Index {
                entries: (0..1000).map(entry).collect(),
                done: true,
            },
        ),
    ]
}

#[divan::bench(args = ["file_end", "chunk_1mib", "want_1000", "index_1000"])]
fn frame_encode(bencher: Bencher, name: &str) {
    let msg = samples().into_iter().find(|(n, _)| *n == name).map(|(_, m)| m).expect("sample");
    bencher.bench(|| encode(black_box(&msg)));
}

#[divan::bench(args = ["file_end", "chunk_1mib", "want_1000", "index_1000"])]
fn frame_decode(bencher: Bencher, name: &str) {
    let msg = samples().into_iter().find(|(n, _)| *n == name).map(|(_, m)| m).expect("sample");
    let frame = encode(&msg);
    bencher.bench(|| decode(black_box(&frame)).expect("decodes"));
}

#[divan::bench(args = [4 << 10, 1 << 20, 16 << 20])]
fn blake3_hash(bencher: Bencher, len: usize) {
    let data = noise(len, 2);
    bencher
        .counter(divan::counter::BytesCount::new(len))
        .bench(|| Hash::of(black_box(&data)));
}

const SEGMENT: usize = 4 << 20;

/// A 4 MiB segment and its copy with 4 KiB changed in the middle.
fn segment_pair() -> (Vec<u8>, Vec<u8>) {
    let old = noise(SEGMENT, 3);
    let mut new = old.clone();
    new[SEGMENT / 2..SEGMENT / 2 + 4096].copy_from_slice(&noise(4096, 4));
    (old, new)
}

#[divan::bench]
fn delta_signature_4mib(bencher: Bencher) {
    let (old, _) = segment_pair();
    bencher
        .counter(divan::counter::BytesCount::new(SEGMENT))
        .bench(|| FileSignature::of_file(&mut Cursor::new(black_box(&old)), SEGMENT as u64).expect("signature"));
}

#[divan::bench]
fn delta_diff_4mib(bencher: Bencher) {
    let (old, new) = segment_pair();
    let sig = FileSignature::of_file(&mut Cursor::new(&old), SEGMENT as u64).expect("signature");
    bencher
        .counter(divan::counter::BytesCount::new(SEGMENT))
        .bench(|| sig.diff_segment(0, black_box(&new)).expect("diff"));
}

#[divan::bench]
fn delta_apply_4mib(bencher: Bencher) {
    let (old, new) = segment_pair();
    let sig = FileSignature::of_file(&mut Cursor::new(&old), SEGMENT as u64).expect("signature");
    let delta = sig.diff_segment(0, &new).expect("diff");
    bencher
        .counter(divan::counter::BytesCount::new(SEGMENT))
        .bench(|| apply_segment(black_box(&old), black_box(&delta)).expect("apply"));
}

/// The index store (redb): 8192 entries of one folder of 200,000 inserted
/// and committed durably (fsync) in one transaction, as an initial sync
/// commits them. Compared with SQLite in docs/ARCHITECTURE.md.
#[divan::bench(sample_count = 10)]
fn index_commit_8192(bencher: Bencher) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut index, _) = dirsync::fs::index_db::open_index(&dir.path().join("index.redb")).expect("an index");
    let mut next = 0;
    bencher.bench_local(|| {
        for i in next..next + 8192 {
            index.insert(entry(i));
        }
        next += 8192;
        index.commit().expect("a commit");
    });
}

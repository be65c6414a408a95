//! Crash safety with real processes: a receiver killed with SIGKILL in the
//! middle of a large file shows nothing partial under the file's name, and
//! after a restart it cleans its temp file and converges.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const SIZE: usize = 200 << 20;
const TIMEOUT: Duration = Duration::from_secs(180);

/// Write `SIZE` bytes of "sparse-ish" data to `path`: pseudo-random 1 MiB
/// blocks with every fourth block zero. Returns its blake3 hash.
fn write_big(path: &Path) -> String {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut hasher = blake3::Hasher::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..SIZE >> 20 {
        if i % 4 == 3 {
            block.fill(0);
        } else {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
        }
        hasher.update(&block);
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    hasher.finalize().to_hex().to_string()
}

/// The temp files under `dir`, with their sizes.
fn temp_sizes(dir: &Path) -> Vec<(String, u64)> {
    temp_files(dir)
        .into_iter()
        .map(|rel| {
            let len = fs::metadata(dir.join(&rel)).map(|m| m.len()).unwrap_or(0);
            (rel, len)
        })
        .collect()
}

fn file_hash(path: &Path) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    let mut h = blake3::Hasher::new();
    h.update_reader(&mut f).ok()?;
    Some(h.finalize().to_hex().to_string())
}

#[test]
fn sigkill_while_receiving_leaves_nothing_partial_and_the_restart_converges() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let want = write_big(&a.join("big.bin"));
    write(&a, "small.txt", b"small");

    let bport = free_udp_port();
    let _pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let mut pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));

    // Kill the receiver once part of the big file is in its temp file.
    let (caught, _) = wait_until(TIMEOUT, || temp_sizes(&b).iter().any(|(_, len)| *len > 0));
    assert!(caught, "the big file never started arriving:\n{}", pb.log_text());
    pb.kill(); // SIGKILL
    let left = temp_sizes(&b);
    let partial = left.iter().any(|(_, len)| *len > 0 && *len < SIZE as u64);
    println!("killed with temp files {left:?}");
    // Nothing partial under the real name: absent, or whole.
    match file_hash(&b.join("big.bin")) {
        None => {}
        Some(h) => assert_eq!(h, want, "a partial big.bin is visible"),
    }
    assert!(
        partial || b.join("big.bin").exists(),
        "killed neither mid-transfer nor after it: {left:?}"
    );

    // Restart: the temp file is removed and the file arrives whole.
    let pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b2.log"));
    // Its first answer: what it cleaned at start.
    let removed_at_start = pb.counters().temp_files_removed;
    let (ok, _) = wait_until(TIMEOUT, || {
        file_hash(&b.join("big.bin")).as_deref() == Some(want.as_str()) && all_equal(&[&a, &b]) && temp_files(&b).is_empty()
    });
    assert!(
        ok,
        "no convergence after the restart: {:?}\n{}\n{}",
        temp_sizes(&b),
        describe_difference(&[&a, &b]),
        pb.log_text()
    );
    if partial {
        assert!(
            removed_at_start >= 1,
            "the crash's temp file was not cleaned at start:\n{}",
            pb.log_text()
        );
    }
}

/// A node killed, its index then corrupted (a torn disk, a bad sector):
/// it starts anyway, says it rebuilds the index, and syncs.
#[test]
fn a_corrupt_index_is_rebuilt_from_a_scan_not_a_crash() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    write(&a, "one.txt", b"one");
    let bport = free_udp_port();
    let mut pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let index = a.join(".dirsync/index");
    let (saved, _) = wait_until(TIMEOUT, || index.exists());
    assert!(saved, "no index written:\n{}", pa.log_text());
    pa.kill();
    fs::write(&index, b"\x78\x9c garbage, not zlib JSON").unwrap();
    write(&a, "two.txt", b"two");
    let pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a2.log"));
    let pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]) && tree(&b).len() == 2);
    assert!(ok, "{}\n{}\n{}", describe_difference(&[&a, &b]), pa.log_text(), pb.log_text());
    let rebuilt = pa.counters().index_rebuilt;
    assert_eq!(rebuilt, 1, "the corrupt index was not rebuilt from a scan:\n{}", pa.log_text());
    assert!(a.join(".dirsync/index.corrupt").exists());
}

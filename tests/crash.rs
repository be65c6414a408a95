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
    // A temp file left means the big file was on its way (fetched in
    // pieces, its temp file may reach its full size before the last one).
    let partial = !left.is_empty();
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
    let index = a.join(".dirsync/index.redb");
    let (saved, _) = wait_until(TIMEOUT, || index.exists());
    assert!(saved, "no index written:\n{}", pa.log_text());
    pa.kill();
    fs::write(&index, b"garbage, not a database").unwrap();
    write(&a, "two.txt", b"two");
    let pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a2.log"));
    let pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]) && tree(&b).len() == 2);
    assert!(ok, "{}\n{}\n{}", describe_difference(&[&a, &b]), pa.log_text(), pb.log_text());
    let rebuilt = pa.counters().index_rebuilt;
    assert_eq!(rebuilt, 1, "the corrupt index was not rebuilt from a scan:\n{}", pa.log_text());
    assert!(a.join(".dirsync/index.redb.corrupt").exists());
}

/// Issue 14: a receiver killed with SIGKILL in the middle of a burst of
/// 10,000 small files. After the restart, no file that was installed
/// before the kill is fetched again (the restart's scan finds it with the
/// content and mtime the peer announces: the same version), and no
/// conflict copy appears, even when the sender then edits every file
/// (the histories of the found files merged with the sender's).
#[test]
fn sigkill_in_a_burst_of_small_receives_fetches_nothing_installed_again_and_makes_no_conflict_copy() {
    const FILES: usize = 10_000;
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&b).unwrap();
    for i in 0..FILES {
        write(&a, &format!("d{}/f{i}.txt", i % 20), format!("file {i}").as_bytes());
    }
    let bport = free_udp_port();
    let pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let mut pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));
    let count = |dir: &Path| tree(dir).values().filter(|v| !v.is_dir()).count();
    let (caught, _) = wait_until(TIMEOUT, || count(&b) >= FILES / 5);
    assert!(caught, "the burst never started arriving:\n{}", pb.log_text());
    pb.kill(); // SIGKILL
    let installed = count(&b);
    println!("killed with {installed} files installed");
    assert!(installed < FILES, "killed after the burst, not during it");

    let pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b2.log"));
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(
        ok,
        "no convergence after the restart:\n{}\n{}",
        describe_difference(&[&a, &b]),
        pb.log_text()
    );
    let (_, after) = pb.wait_counters(TIMEOUT, |c| c.files_received as usize + installed >= FILES);
    assert!(
        after.files_received as usize + installed <= FILES,
        "{} files received after the restart, {installed} were installed before it: some came twice",
        after.files_received
    );
    // Every file edited on the sender: the receiver takes each edit as a
    // newer version of what it holds, never as a concurrent one.
    for i in (0..FILES).step_by(10) {
        write(&a, &format!("d{}/f{i}.txt", i % 20), format!("file {i}, edited").as_bytes());
    }
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "the edits did not arrive:\n{}", describe_difference(&[&a, &b]));
    let conflicts: Vec<String> = tree(&b).into_keys().filter(|p| p.contains("sync-conflict")).collect();
    let first = conflicts
        .first()
        .map(|c| c.split(".sync-conflict").next().unwrap_or("").to_string())
        .unwrap_or_default();
    let about = |log: String| {
        log.lines()
            .filter(|l| l.contains(&format!("{first}.txt")))
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        conflicts.is_empty(),
        "{} spurious conflict copies, first {:?}\nA: {}\nB: {}",
        conflicts.len(),
        conflicts.first(),
        about(pa.log_text()),
        about(pb.log_text())
    );
}

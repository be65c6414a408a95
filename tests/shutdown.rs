//! Clean shutdown: SIGTERM while a large file arrives leaves no partial
//! file and no temp file, saves the index and exits 0; started again, the
//! node finishes the sync.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
const BIG: usize = 128 * 1024 * 1024;

#[test]
fn sigterm_during_a_transfer_leaves_no_partial_file() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    // Not all one byte value, so nothing about it is special.
    let big: Vec<u8> = (0..BIG as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    write(&a, "big.bin", &big);
    write(&a, "small.txt", b"small");
    let big_hash = *blake3::hash(&big).as_bytes();
    drop(big);

    let (pa, pb) = (free_tcp_port(), free_tcp_port());
    let flags = |port: u16| vec!["--no-discovery".to_string(), "--peer".into(), format!("127.0.0.1:{port}")];
    let _a = Proc::start_args(&a, pa, &flags(pb), &root.join("a.log"));
    let mut b_proc = Proc::start_args(&b, pb, &flags(pa), &root.join("b.log"));

    // The big file is on its way once its temp file shows in B's folder.
    let (arriving, _) = wait_until(TIMEOUT, || !temp_files(&b).is_empty() || b.join("big.bin").exists());
    assert!(arriving, "the transfer never started:\n{}", b_proc.log_text());
    b_proc.signal("TERM");
    assert_eq!(b_proc.wait_exit(TIMEOUT), Some(0), "{}", b_proc.log_text());

    let log = b_proc.log_text();
    assert!(log.contains("shut down"), "{log}");
    assert!(temp_files(&b).is_empty(), "temp files left: {:?}", temp_files(&b));
    let t = tree(&b);
    if let Some(item) = t.get("big.bin") {
        assert_eq!(item.hash(), Some(big_hash), "a partial big.bin is visible");
    }
    if !t.contains_key("big.bin") {
        assert!(log.contains("abandoned_transfers=1"), "{log}");
    }
    println!(
        "at SIGTERM: {}",
        if t.contains_key("big.bin") {
            "big.bin had arrived whole"
        } else {
            "big.bin was abandoned"
        }
    );
    assert!(!b.join(".dirsync/control.sock").exists());

    // Started again, B gets everything.
    let b2 = Proc::start_args(&b, pb, &flags(pa), &root.join("b2.log"));
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(
        ok,
        "no sync after the restart:\n{}\n{}",
        describe_difference(&[&a, &b]),
        b2.log_text()
    );
}

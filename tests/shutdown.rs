//! Clean shutdown: SIGTERM while a large file arrives leaves no partial
//! file and no temp file, saves the index and exits 0; started again, the
//! node finishes the sync.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
const BIG: usize = 32 * 1024 * 1024;

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
    // The sender is held to 4 MiB/s: the big file takes 8 s, so the
    // signal surely lands while it is under way.
    let mut a_flags = flags(pb);
    a_flags.extend(["--max-send-rate".to_string(), "4MiB/s".into()]);
    let _a = Proc::start_args(&a, pa, &a_flags, &root.join("a.log"));
    let mut b_proc = Proc::start_args(&b, pb, &flags(pa), &root.join("b.log"));

    // The big file is on its way once its temp file shows in B's folder.
    let (arriving, _) = wait_until(TIMEOUT, || !temp_files(&b).is_empty());
    assert!(arriving, "the transfer never started:\n{}", b_proc.log_text());
    assert!(!b.join("big.bin").exists(), "big.bin arrived too soon to test a shutdown during it");
    b_proc.signal("TERM");
    assert_eq!(b_proc.wait_exit(TIMEOUT), Some(0), "{}", b_proc.log_text());

    // Abandoned: nothing partial visible, no temp file left, the control
    // socket gone.
    assert!(temp_files(&b).is_empty(), "temp files left: {:?}", temp_files(&b));
    assert!(!tree(&b).contains_key("big.bin"), "a partial big.bin is visible");
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
    assert_eq!(tree(&b).get("big.bin").and_then(|i| i.hash()), Some(big_hash));
}

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

/// Issue 26, item 3: with stderr a pipe whose reader is gone (`dirsync DIR
/// 2>&1 | head -1`, a log collector that died), TERM, TERM and INT were all
/// survived: the second-signal message panicked the signal thread. The
/// first signal stops the node whatever stderr is, and so does a second.
#[test]
fn signals_stop_the_node_when_stderr_is_a_dead_pipe() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    for signals in [&["TERM"][..], &["TERM", "TERM"], &["INT"]] {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.txt", b"a");
        let mut child = Command::new(BIN)
            .args([d.path().to_str().unwrap(), "--no-discovery", "-l", &free_tcp_port().to_string()])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        drop(stderr);
        // The node is up (it answers) and has logged into the dead pipe.
        let (up, _) = wait_until(TIMEOUT, || status_of(d.path()).is_some());
        assert!(up, "the node never answered; its first line: {first}");
        for s in signals {
            let ok = Command::new("kill")
                .args([format!("-{s}"), child.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let (exited, _) = wait_until(TIMEOUT, || child.try_wait().unwrap().is_some());
        if !exited {
            let _ = child.kill();
        }
        assert!(exited, "{signals:?} did not stop a node whose stderr is a dead pipe");
        let _ = child.wait();
    }
}

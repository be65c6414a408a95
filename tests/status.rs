//! `dirsync status` against real nodes on loopback, connected by static
//! peers with discovery off (`--no-discovery --peer`), each listing the
//! other so the one-connection-per-pair rule is exercised too.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn status(dir: &Path) -> Output {
    Command::new(BIN).arg("status").arg(dir).output().unwrap()
}

/// The digest on the `tree` line of a status report.
fn tree_digest(report: &str) -> String {
    let line = report
        .lines()
        .find(|l| l.starts_with("tree "))
        .unwrap_or_else(|| panic!("no tree line:\n{report}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn static_peers_without_discovery_sync_and_status_shows_equal_digests() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    write(&a, "from-a.txt", b"hello from a");
    write(&b, "deep/from-b.bin", &vec![3u8; 100_000]);
    let (pa, pb) = (free_tcp_port(), free_tcp_port());
    let peer = |port: u16| vec!["--no-discovery".to_string(), "--peer".into(), format!("127.0.0.1:{port}")];
    // A is given the list of every host, itself included (one list shared
    // by all hosts); B names A by host name: names resolve.
    let mut a_flags = peer(pb);
    a_flags.extend(["--peer".to_string(), format!("127.0.0.1:{pa}")]);
    let pa_proc = Proc::start_args(&a, pa, &a_flags, &root.join("a.log"));
    let mut b_flags = peer(pa);
    b_flags[2] = format!("localhost:{pa}");
    let pb_proc = Proc::start_args(&b, pb, &b_flags, &root.join("b.log"));

    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(
        ok,
        "no sync over static peers:\n{}\n{}\n{}",
        describe_difference(&[&a, &b]),
        pa_proc.log_text(),
        pb_proc.log_text()
    );
    assert!(tree(&a).contains_key("deep/from-b.bin") && tree(&b).contains_key("from-a.txt"));

    // Digests travel once a second: wait until each side reports the other in sync.
    let mut reports = (String::new(), String::new());
    let (ok, _) = wait_until(TIMEOUT, || {
        let (ra, rb) = (status(&a), status(&b));
        reports = (
            String::from_utf8_lossy(&ra.stdout).to_string(),
            String::from_utf8_lossy(&rb.stdout).to_string(),
        );
        ra.status.success() && rb.status.success() && reports.0.contains("in sync") && reports.1.contains("in sync")
    });
    let (ra, rb) = reports;
    assert!(ok, "status never showed the peers in sync:\n{ra}\n{rb}");
    println!("{ra}\n{rb}");
    assert_eq!(tree_digest(&ra), tree_digest(&rb), "synced nodes report different digests");
    assert_eq!(tree_digest(&ra).len(), 64);
    // Each names the other: its port, its node id, synchronized; one peer each.
    let id = |r: &str| r.lines().next().unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert!(ra.contains(&format!("127.0.0.1:{pb}")) && ra.contains(&id(&rb)), "{ra}");
    assert!(rb.contains(&format!("127.0.0.1:{pa}")) && rb.contains(&id(&ra)), "{rb}");
    for r in [&ra, &rb] {
        assert!(r.contains("peers    1\n"), "one connection per pair:\n{r}");
        assert!(r.contains("synchronized"), "{r}");
        assert!(r.contains("error    none"), "{r}");
    }
    let (ok, counters) = pa_proc.wait_counters(TIMEOUT, |c| c.static_self >= 1);
    assert!(ok, "A did not notice it is its own static peer:\n{}", pa_proc.log_text());
    assert_eq!(counters.static_self, 1, "A is its own static peer once, then not dialled again");
    // Discovery is off: neither node learnt a peer from an announcement.
    for p in [&pa_proc, &pb_proc] {
        assert_eq!(p.counters().discovered, 0, "{}", p.log_text());
    }

    // A change makes the digests differ for a moment and agree again.
    write(&a, "later.txt", b"later");
    let (ok, _) = wait_until(TIMEOUT, || {
        let (ra, rb) = (status(&a), status(&b));
        let (ra, rb) = (String::from_utf8_lossy(&ra.stdout), String::from_utf8_lossy(&rb.stdout));
        ra.contains("3 files") && tree_digest(&ra) == tree_digest(&rb) && ra.contains("in sync")
    });
    assert!(ok, "digests did not agree again after a change");
}

#[test]
fn status_without_a_node_says_so() {
    let d = tempfile::tempdir().unwrap();
    let out = status(d.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no dirsync node is running"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = Command::new(BIN).args(["status", "/nonexistent/dirsync-test"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn status_json_and_state_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let a = scratch.path().join("a");
    fs::create_dir_all(&a).unwrap();
    write(&a, "x.txt", b"x");
    let mut p = Proc::start_args(&a, free_tcp_port(), &["--no-discovery".to_string()], &scratch.path().join("a.log"));
    let mut json = String::new();
    let (ok, _) = wait_until(TIMEOUT, || {
        let out = Command::new(BIN).arg("status").arg(&a).arg("--json").output().unwrap();
        json = String::from_utf8_lossy(&out.stdout).to_string();
        out.status.success()
    });
    assert!(ok, "no answer:\n{}", p.log_text());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["files"], 1, "{json}");
    assert_eq!(v["peers"].as_array().map(Vec::len), Some(0), "{json}");
    // What scripts read (docker/e2e.py): the counters and the suspension.
    assert_eq!(v["counters"]["connections"], 0, "{json}");
    assert!(v["suspended"].is_null(), "{json}");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&a.join(".dirsync")), 0o700);
    assert_eq!(mode(&a.join(".dirsync/control.sock")), 0o600);
    // A second node on the same directory is refused: one line, exit 1.
    let second = Command::new(BIN)
        .arg(&a)
        .args(["-l", &free_tcp_port().to_string(), "--no-discovery"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another dirsync node already runs"), "{err}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(TIMEOUT), Some(0));
    assert!(!a.join(".dirsync/control.sock").exists(), "the socket is removed on exit");
}

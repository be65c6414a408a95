//! The trash with real processes (issue 13, item 9): a file a peer's change
//! deletes or replaces is kept in DIR/.dirsync/trash, listed with its
//! original path by `dirsync trash`, counted in `dirsync status`, and never
//! synced.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn trash_list(dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(BIN).arg("trash").arg(dir).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn trash_bytes(dir: &Path) -> Option<u64> {
    status_of(dir).map(|s| s.trash_bytes)
}

#[test]
fn what_a_peer_deletes_or_replaces_is_kept_in_the_trash() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = two_dirs(root);
    write(&a, "docs/report.txt", b"first draft");
    write(&a, "gone.txt", b"soon deleted");
    let bport = free_udp_port();
    let _pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let _pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "no initial sync:\n{}", describe_difference(&[&a, &b]));
    assert!(trash_list(&b).is_empty());

    fs::remove_file(a.join("gone.txt")).unwrap();
    write(&a, "docs/report.txt", b"second draft");
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]) && trash_list(&b).len() == 2);
    assert!(ok, "{:?}\n{}", trash_list(&b), describe_difference(&[&a, &b]));
    let kept = trash_list(&b);
    let mut originals: Vec<&str> = kept.iter().map(|k| k["original"].as_str().unwrap()).collect();
    originals.sort();
    assert_eq!(originals, ["docs/report.txt", "gone.txt"]);
    let old = kept.iter().find(|k| k["original"] == "docs/report.txt").unwrap();
    assert_eq!(fs::read(old["path"].as_str().unwrap()).unwrap(), b"first draft");
    assert!(!b.join("gone.txt").exists());
    assert_eq!(fs::read(b.join("docs/report.txt")).unwrap(), b"second draft");
    // The trash is counted and never synced: A's own trash stays empty.
    // Counted as the disk space it takes (allocated blocks).
    let on_disk: u64 = kept.iter().map(|k| allocated(Path::new(k["path"].as_str().unwrap()))).sum();
    let (counted, _) = wait_until(TIMEOUT, || trash_bytes(&b) == Some(on_disk));
    assert!(counted, "{:?}", trash_bytes(&b));
    assert!(trash_list(&a).is_empty());
}

#[test]
fn trash_on_a_missing_directory_says_so() {
    let out = Command::new(BIN).arg("trash").arg("/nonexistent/dirsync-dir").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dirsync-dir"));
}

/// Issue 26, item 6: a log appended every 20 ms for 30 s left 1,495
/// versions of itself in the receiver's trash (1.1 GB for 1.5 MB of log).
/// Now the trash holds one version of it: about one copy of the log.
#[test]
fn an_appended_log_leaves_about_one_copy_of_itself_in_the_trash() {
    use std::io::Write;
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = two_dirs(root);
    let bport = free_udp_port();
    let _pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let _pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));
    let mut log = fs::File::create(a.join("app.log")).unwrap();
    for i in 0..200 {
        writeln!(log, "{i:06} {}", "x".repeat(1000)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(log);
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "{}", describe_difference(&[&a, &b]));
    let kept = trash_list(&b);
    let versions = kept.iter().filter(|k| k["original"] == "app.log").count();
    assert!(versions <= 1, "{versions} versions of the log kept");
    let trash: u64 = kept.iter().map(|k| allocated(Path::new(k["path"].as_str().unwrap()))).sum();
    let log_size = allocated(&b.join("app.log"));
    assert!(trash <= log_size, "the trash holds {trash} bytes for a log of {log_size}");
}

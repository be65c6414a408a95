//! The mass-delete guard with real processes: a directory that disappears
//! or is suddenly empty under a running node (what an unmounted disk looks
//! like) stops that node from syncing; nothing is deleted anywhere, and
//! syncing resumes by itself when the files are back.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Why the node running on `dir` does not sync (`suspended` in `dirsync
/// status --json`): `Some(None)` while it syncs, `None` if it does not answer.
fn suspended(dir: &Path) -> Option<Option<String>> {
    status_of(dir).map(|s| s.suspended)
}

#[test]
fn a_directory_emptied_under_a_running_node_deletes_nothing_and_resumes_when_back() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    for i in 0..20 {
        write(&a, &format!("data/folder{}/file{i}.txt", i % 4), format!("content {i}").as_bytes());
    }
    let bport = free_udp_port();
    let pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let pb = Proc::start_with(&b, free_tcp_port(), bport, &root.join("b.log"), &["--rescan-interval", "2"], &[]);
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "no initial sync:\n{}", describe_difference(&[&a, &b]));
    let original = tree(&a);
    assert_eq!(original.values().filter(|v| matches!(v, Item::File { .. })).count(), 20);

    // The disk goes away: DIR disappears (its state folder with it)...
    let away = root.join("b.unmounted");
    fs::rename(&b, &away).unwrap();
    // Its control socket moved along with its state folder.
    let mut why = None;
    let (tripped, _) = wait_until(TIMEOUT, || {
        why = suspended(&away).flatten();
        why.is_some()
    });
    assert!(tripped, "the guard did not trip:\n{}", pb.log_text());
    let why = why.unwrap();
    assert!(why.contains("the directory cannot be read"), "{why}");
    // ... then an empty mount point is where it was.
    fs::create_dir(&b).unwrap();
    // Life goes on at A meanwhile.
    write(&a, "while-away.txt", b"written while b was unmounted");
    // The disk comes back.
    fs::remove_dir(&b).unwrap();
    fs::rename(&away, &b).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]) && tree(&b).contains_key("while-away.txt"));
    assert!(
        ok,
        "no convergence after the disk came back:\n{}\n--- a\n{}\n--- b\n{}",
        describe_difference(&[&a, &b]),
        pa.log_text(),
        pb.log_text()
    );
    assert_eq!(suspended(&b), Some(None), "b syncs again");
    // Nothing was deleted anywhere.
    let after = tree(&a);
    for (path, v) in &original {
        assert_eq!(after.get(path), Some(v), "{path} changed or vanished at a");
    }

    // Now emptied in place, its state folder kept: everything synced goes
    // at once (one folder holds it all and is moved out).
    // (After the resume, an ordinary delete travels as usual.)
    fs::remove_file(b.join("while-away.txt")).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || !a.join("while-away.txt").exists() && all_equal(&[&a, &b]));
    assert!(ok, "a plain delete did not travel:\n{}", describe_difference(&[&a, &b]));
    let gone = root.join("b-data");
    fs::rename(b.join("data"), &gone).unwrap();
    let (tripped, _) = wait_until(TIMEOUT, || {
        suspended(&b).flatten().is_some_and(|why| why.contains("the directory is empty"))
    });
    assert!(tripped, "the guard did not trip on an empty directory:\n{}", pb.log_text());
    fs::rename(&gone, b.join("data")).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || suspended(&b) == Some(None) && all_equal(&[&a, &b]));
    assert!(ok, "no resume after the files came back:\n{}", pb.log_text());
    let after = tree(&a);
    for (path, v) in &original {
        assert_eq!(after.get(path), Some(v), "{path} changed or vanished at a after the second outage");
    }
}

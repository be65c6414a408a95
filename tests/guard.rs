//! The mass-delete guard with real processes. The rule (docs/CONFLICTS.md):
//! DIR's marker folder `DIR/.dirsync` proves DIR is the directory synced.
//! A DIR that disappears, or is there without its marker (what an
//! unmounted disk looks like), stops that node from syncing: nothing is
//! deleted anywhere, and syncing resumes by itself when it is back. A DIR
//! emptied with its marker kept (`rm -rf DIR/*`) is a deletion like any
//! other, and reaches every node, whole.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn files(root: &Path) -> usize {
    tree(root).values().filter(|v| v.hash().is_some()).count()
}

#[test]
fn an_unmounted_directory_deletes_nothing_and_an_emptied_one_deletes_everything() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    for i in 0..60 {
        write(&a, &format!("data/folder{}/file{i}.txt", i % 4), format!("content {i}").as_bytes());
    }
    let bport = free_udp_port();
    let _pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let pb = Proc::start_with(&b, free_tcp_port(), bport, &root.join("b.log"), &["--rescan-interval", "2"], &[]);
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "no initial sync:\n{}", describe_difference(&[&a, &b]));
    let original = tree(&a);
    assert_eq!(files(&a), 60);

    // The disk goes away: DIR disappears (its marker with it), then an
    // empty mount point is where it was.
    let away = root.join("b.unmounted");
    fs::rename(&b, &away).unwrap();
    fs::create_dir(&b).unwrap();
    // The control socket moved with the state folder: ask it there.
    let (tripped, _) = wait_until(TIMEOUT, || status_of(&away).is_some_and(|s| s.suspended.is_some()));
    assert!(tripped, "the guard did not trip:\n{}", pb.log_text());
    // Life goes on at A meanwhile; nothing is deleted there, however many
    // times B looks at its empty directory (each second while suspended).
    write(&a, "while-away.txt", b"written while b was unmounted");
    let looks = |dir: &std::path::Path| status_of(dir).map(|s| s.counters.looks);
    let before = looks(&away).unwrap_or(0);
    let (looked, _) = wait_until(TIMEOUT, || looks(&away).is_some_and(|n| n >= before + 3));
    assert!(looked, "b did not look again while suspended:\n{}", pb.log_text());
    let after = tree(&a);
    for (path, v) in &original {
        assert_eq!(after.get(path), Some(v), "{path} changed or vanished at a while b was away");
    }
    // The disk comes back: syncing resumes, and A's change arrives.
    fs::remove_dir(&b).unwrap();
    fs::rename(&away, &b).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]) && b.join("while-away.txt").exists());
    assert!(ok, "no convergence after the disk came back:\n{}", describe_difference(&[&a, &b]));
    let (resumed, _) = wait_until(TIMEOUT, || status_of(&b).is_some_and(|s| s.suspended.is_none()));
    assert!(resumed, "{:?}", status_of(&b));

    // `rm -rf DIR/*` on purpose (the marker is a dot folder, kept): every
    // delete reaches A, not some of them (issue 13, bug 4).
    for entry in fs::read_dir(&b).unwrap().flatten() {
        if entry.file_name() != ".dirsync" {
            let p = entry.path();
            if p.is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
    }
    let (ok, _) = wait_until(TIMEOUT, || files(&a) == 0 && all_equal(&[&a, &b]));
    assert!(
        ok,
        "an emptied directory did not empty its peer:\n{}",
        describe_difference(&[&a, &b])
    );
    assert!(status_of(&b).is_some_and(|s| s.suspended.is_none()));
}

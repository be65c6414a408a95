//! `dirsync conflicts` with real processes: a concurrent edit made while two
//! nodes were apart leaves a conflict copy on both; the command lists it
//! (the file it lost against, when and by which device), and settling it
//! with `--keep` on one host reaches the other like any change.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn conflicts(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("conflicts").arg(dir).args(args).output().unwrap()
}

fn listed(dir: &Path) -> Vec<serde_json::Value> {
    let out = conflicts(dir, &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn device_of(dir: &Path) -> String {
    fs::read_to_string(dir.join(".dirsync/device")).unwrap().trim()[..8].to_string()
}

#[test]
fn a_conflict_copy_is_listed_and_keeping_it_reaches_every_host() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = two_dirs(root);
    write(&a, "docs/report.txt", b"first draft");
    let bport = free_udp_port();
    let (pa_port, pb_port) = (free_tcp_port(), free_tcp_port());
    let _pa = Proc::start(&a, pa_port, bport, &root.join("a.log"));
    let mut pb = Proc::start(&b, pb_port, bport, &root.join("b.log"));
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "no initial sync:\n{}", describe_difference(&[&a, &b]));
    assert!(listed(&a).is_empty());

    // Apart, each host edits the file; B's edit is the later one and wins.
    pb.signal("TERM");
    assert_eq!(pb.wait_exit(TIMEOUT), Some(0));
    write(&a, "docs/report.txt", b"edited on A");
    std::thread::sleep(Duration::from_millis(50));
    write(&b, "docs/report.txt", b"edited on B, later");
    let _pb = Proc::start(&b, pb_port, bport, &root.join("b2.log"));
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]) && listed(&a).len() == 1);
    assert!(ok, "{:?}\n{}", listed(&a), describe_difference(&[&a, &b]));

    let on_a = &listed(&a)[0];
    assert_eq!(on_a["original"], "docs/report.txt");
    assert_eq!(on_a["original_exists"], true);
    assert_eq!(on_a["device"], device_of(&a), "A wrote the losing version");
    assert_eq!(on_a["this_device"], true);
    assert_eq!(listed(&b)[0]["this_device"], false);
    let copy = on_a["path"].as_str().unwrap().to_string();
    assert_eq!(fs::read(a.join(&copy)).unwrap(), b"edited on A");
    assert_eq!(fs::read(a.join("docs/report.txt")).unwrap(), b"edited on B, later");
    let text = conflicts(&b, &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&copy) && text.contains("lost against docs/report.txt"), "{text}");
    // Issue 26, item 9: it said "…UTCby device".
    assert!(text.contains(&format!(" UTC by device {}", device_of(&a))), "{text}");

    // Settled on B: A's version becomes the file everywhere, the copy goes.
    let out = conflicts(&b, &["--keep", &copy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (ok, _) = wait_until(TIMEOUT, || {
        all_equal(&[&a, &b]) && listed(&a).is_empty() && fs::read(a.join("docs/report.txt")).ok().as_deref() == Some(b"edited on A")
    });
    assert!(ok, "{:?}\n{}", listed(&a), describe_difference(&[&a, &b]));
}

#[test]
fn settling_refuses_what_is_not_a_conflict_copy() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    write(dir, "plain.txt", b"x");
    let out = conflicts(dir, &["--drop", "plain.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a conflict copy"));
    assert!(dir.join("plain.txt").exists());
    let both = conflicts(dir, &["--keep", "a", "--drop", "b"]);
    assert_eq!(both.status.code(), Some(2));
    let missing = Command::new(BIN).args(["conflicts", "/nonexistent/dirsync-dir"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    // No node runs here: listing works from the disk alone.
    let none = conflicts(dir, &[]);
    assert!(String::from_utf8_lossy(&none.stdout).contains("no conflict copies"));
}

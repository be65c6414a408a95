//! A state directory removed under a running node (issue 24, case 6). With
//! `-s` elsewhere, the node makes it again with what it keeps there (the
//! index, written whole to a new file, the device id, the control socket)
//! and goes on saving; where it cannot, it stops with an error and a
//! non-zero exit. With the default state directory, `DIR/.dirsync`, the
//! folder is also DIR's marker: its removal suspends the node (the
//! mass-delete guard), which does not make it again, and `dirsync status`
//! still answers (at the socket's twin in the user's runtime folder).

mod common;

use common::*;
use dirsync::fs::state::load_index;
use dirsync::node::status::Status;
use dirsync::wire::RelPath;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// `dirsync status DIR [extra] ...`.
fn status_cmd(dir: &Path, extra: &[&Path]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("status").arg(dir);
    for (i, a) in extra.iter().enumerate() {
        if i == 0 {
            c.arg("-s");
        }
        c.arg(a);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

/// `dirsync status DIR -s STATE --json`, parsed; `None` while no node answers.
fn status_with_state(dir: &Path, state: &Path) -> Option<Status> {
    let out = Command::new(BIN)
        .arg("status")
        .arg(dir)
        .arg("-s")
        .arg(state)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The index a stopped node left in `state`: whether it knows `paths`.
fn index_holds(state: &Path, paths: &[&str]) -> bool {
    let loaded = load_index(state).unwrap();
    loaded.history_known && paths.iter().all(|p| loaded.index.live(&RelPath::new(*p).unwrap()).is_some())
}

#[test]
fn a_state_directory_elsewhere_removed_under_the_node_is_made_again_and_the_index_saved_there() {
    let scratch = tempfile::tempdir().unwrap();
    let a = scratch.path().join("a");
    let state = scratch.path().join("state");
    fs::create_dir_all(&a).unwrap();
    write(&a, "before.txt", b"before");
    let s = state.to_str().unwrap().to_string();
    let args = ["--no-discovery".to_string(), "-s".into(), s];
    let log = scratch.path().join("a.log");
    let mut p = Proc::start_args(&a, free_tcp_port(), &args, &log);
    let (ok, _) = wait_until(TIMEOUT, || status_with_state(&a, &state).is_some());
    assert!(ok, "no answer:\n{}", p.log_text());
    let device = fs::read_to_string(state.join("device")).unwrap();

    fs::remove_dir_all(&state).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || {
        ["index.redb", "device", "control.sock"].iter().all(|f| state.join(f).exists()) && status_with_state(&a, &state).is_some()
    });
    assert!(
        ok,
        "the state directory was not made again, or status does not answer there:\n{}",
        p.log_text()
    );
    assert_eq!(fs::read_to_string(state.join("device")).unwrap(), device, "the same device id");
    // It goes on saving: a change made now is in the index a clean stop leaves.
    write(&a, "after.txt", b"after");
    let (ok, _) = wait_until(TIMEOUT, || status_with_state(&a, &state).is_some_and(|s| s.files == 2));
    assert!(ok, "the new file was not seen:\n{}", p.log_text());
    p.signal("TERM");
    assert_eq!(p.wait_exit(TIMEOUT), Some(0), "{}", p.log_text());
    assert!(
        index_holds(&state, &["before.txt", "after.txt"]),
        "the index on disk misses what the node saw"
    );

    // A restart keeps that index: nothing is read again to be hashed.
    let p = Proc::start_args(&a, free_tcp_port(), &args, &log);
    let mut last = None;
    let (ok, _) = wait_until(TIMEOUT, || {
        last = status_with_state(&a, &state);
        last.is_some()
    });
    assert!(ok, "no answer after the restart:\n{}", p.log_text());
    let last = last.unwrap();
    assert_eq!((last.files, last.counters.files_hashed), (2, 0), "{}", p.log_text());
}

#[test]
fn a_state_directory_that_cannot_be_made_again_stops_the_node_with_an_error() {
    let scratch = tempfile::tempdir().unwrap();
    let a = scratch.path().join("a");
    let state = scratch.path().join("state");
    fs::create_dir_all(&a).unwrap();
    write(&a, "x.txt", b"x");
    let args = ["--no-discovery".to_string(), "-s".into(), state.to_str().unwrap().into()];
    let log = scratch.path().join("a.log");
    let mut p = Proc::start_args(&a, free_tcp_port(), &args, &log);
    let (ok, _) = wait_until(TIMEOUT, || status_with_state(&a, &state).is_some());
    assert!(ok, "no answer:\n{}", p.log_text());
    // A file where the folder was: it cannot be made again (root or not).
    fs::remove_dir_all(&state).unwrap();
    fs::write(&state, b"in the way").unwrap();
    let code = p.wait_exit(TIMEOUT);
    let text = p.log_text();
    assert_eq!(code, Some(1), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dirsync: error:") && last.contains("cannot save the index"),
        "{text}"
    );
}

#[test]
fn with_the_default_state_directory_a_removed_marker_suspends_the_node_and_status_still_answers() {
    let scratch = tempfile::tempdir().unwrap();
    let a = scratch.path().join("a");
    fs::create_dir_all(&a).unwrap();
    write(&a, "x.txt", b"x");
    let log = scratch.path().join("a.log");
    let mut p = Proc::start_args(&a, free_tcp_port(), &["--no-discovery".to_string()], &log);
    let (ok, _) = wait_until(TIMEOUT, || status_of(&a).is_some());
    assert!(ok, "no answer:\n{}", p.log_text());
    let marker = a.join(".dirsync");

    fs::remove_dir_all(&marker).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || status_of(&a).is_some_and(|s| s.suspended.is_some()));
    assert!(ok, "no status while suspended:\n{:?}\n{}", status_of(&a), p.log_text());
    let out = status_cmd(&a, &[]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && report.contains("NOT SYNCING"), "{report}");
    assert!(!marker.exists(), "the node made the marker again: that defeats the guard");

    // The user makes it again: syncing resumes, and the node's state is
    // back in it (the index, the control socket).
    fs::create_dir(&marker).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || {
        status_of(&a).is_some_and(|s| s.suspended.is_none()) && marker.join("index.redb").exists() && marker.join("control.sock").exists()
    });
    assert!(ok, "{:?}\n{}", status_of(&a), p.log_text());
    write(&a, "y.txt", b"y");
    let (ok, _) = wait_until(TIMEOUT, || status_of(&a).is_some_and(|s| s.files == 2));
    assert!(ok, "{}", p.log_text());
    p.signal("TERM");
    assert_eq!(p.wait_exit(TIMEOUT), Some(0), "{}", p.log_text());
    assert!(
        index_holds(&marker, &["x.txt", "y.txt"]),
        "the index on disk misses what the node saw"
    );
}

#[test]
fn a_node_stopped_while_its_default_state_directory_is_gone_says_its_index_is_not_saved() {
    let scratch = tempfile::tempdir().unwrap();
    let a = scratch.path().join("a");
    fs::create_dir_all(&a).unwrap();
    write(&a, "x.txt", b"x");
    let log = scratch.path().join("a.log");
    let mut p = Proc::start_args(&a, free_tcp_port(), &["--no-discovery".to_string()], &log);
    let (ok, _) = wait_until(TIMEOUT, || status_of(&a).is_some());
    assert!(ok, "no answer:\n{}", p.log_text());
    fs::remove_dir_all(a.join(".dirsync")).unwrap();
    // Wait until the node knows (its status says so), then stop it.
    let (ok, _) = wait_until(TIMEOUT, || {
        status_cmd(&a, &[]).status.success() && status_of(&a).is_some_and(|s| s.suspended.is_some())
    });
    assert!(ok, "{}", p.log_text());
    p.signal("TERM");
    let code = p.wait_exit(TIMEOUT);
    let text = p.log_text();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.lines().last().unwrap_or_default().contains("cannot save the index"), "{text}");
}

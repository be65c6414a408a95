//! Issue 24, cases 3 and 4, with real processes running as an ordinary
//! user (root reads mode-000 files, so the nodes run as `nobody` through
//! `setpriv`; the test is skipped, saying so, where it cannot do that):
//!
//! - a folder made unreadable and renamed on one node: its files are not
//!   deleted on the other (unknown, not gone), status lists it, and once it
//!   can be read again the rename reaches the other node;
//! - a file the only holder cannot read: the new peer shows it as
//!   retrying, the holder warns, and it arrives once it can be read.

mod common;

use common::{free_tcp_port, free_udp_port, status_of, wait_until, Proc, BIN};
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NOBODY: u32 = 65534;

fn can_drop_privileges() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    root && setpriv
}

/// Everything under `path` belongs to `nobody` (the test makes it as root).
fn give_to_nobody(path: &Path) {
    chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap().flatten() {
            give_to_nobody(&e.path());
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A node on `dir` running as `nobody`, on loopback.
fn start_as_nobody(dir: &Path, log: &Path, broadcast: u16) -> Proc {
    let port = free_tcp_port();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
        BIN,
    ])
    .arg(dir)
    .args(["-l", &port.to_string(), "-b", &broadcast.to_string()])
    .args(["--broadcast-addr", "127.255.255.255"]);
    Proc::spawn(cmd, dir, port, log)
}

/// A scratch folder `nobody` can enter.
fn scratch() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    chmod(t.path(), 0o755);
    t
}

fn write_all(dir: &Path, files: &[(&str, &[u8])]) {
    for (path, content) in files {
        let full = dir.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    give_to_nobody(dir);
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn a_renamed_unreadable_folder_deletes_nothing_and_is_reported() {
    if !can_drop_privileges() {
        eprintln!("skipped: needs root and setpriv to run the nodes as an ordinary user");
        return;
    }
    let (ta, tb) = (scratch(), scratch());
    let (a, b) = (ta.path().join("a"), tb.path().join("b"));
    write_all(&a, &[("sub/f1", b"one"), ("sub/f2", b"two"), ("sub/f3", b"three")]);
    fs::create_dir_all(&b).unwrap();
    give_to_nobody(&b);
    let broadcast = free_udp_port();
    let _na = start_as_nobody(&a, &ta.path().join("a.log"), broadcast);
    let nb = start_as_nobody(&b, &tb.path().join("b.log"), broadcast);
    let (ok, _) = wait_until(LONG, || b.join("sub/f3").exists());
    assert!(ok, "the files never arrived:\n{}", nb.log_text());
    // Unreadable, then renamed, on a.
    chmod(&a.join("sub"), 0o000);
    fs::rename(a.join("sub"), a.join("sub2")).unwrap();
    let (reported, _) = wait_until(LONG, || status_of(&a).is_some_and(|s| s.unreadable.contains(&"sub2".to_string())));
    assert!(
        reported,
        "status does not list the unreadable folder: {:?}\n{}",
        status_of(&a).map(|s| s.unreadable),
        _na.log_text()
    );
    std::thread::sleep(Duration::from_secs(4));
    for f in ["sub/f1", "sub/f2", "sub/f3"] {
        assert!(
            b.join(f).exists(),
            "{f} was deleted on b while its data is only in a's unreadable folder"
        );
    }
    let text = Command::new(BIN).arg("status").arg(&a).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("UNREADABLE"), "{text}");
    // Readable again: the rename reaches b.
    chmod(&a.join("sub2"), 0o755);
    let (moved, _) = wait_until(LONG, || b.join("sub2/f3").exists() && !b.join("sub").exists());
    assert!(moved, "the rename did not reach b:\n{}", nb.log_text());
    assert_eq!(fs::read(b.join("sub2/f2")).unwrap(), b"two");
}

#[test]
fn a_file_its_only_holder_cannot_read_is_retried_and_arrives_once_readable() {
    if !can_drop_privileges() {
        eprintln!("skipped: needs root and setpriv to run the nodes as an ordinary user");
        return;
    }
    let (ta, tb) = (scratch(), scratch());
    let (a, b) = (ta.path().join("a"), tb.path().join("b"));
    write_all(&a, &[("open.txt", b"anyone"), ("secret.txt", b"not yet")]);
    fs::create_dir_all(&b).unwrap();
    give_to_nobody(&b);
    let broadcast = free_udp_port();
    // Indexed while readable, then made unreadable before a peer asks.
    let mut first = start_as_nobody(&a, &ta.path().join("a.log"), broadcast);
    let (indexed, _) = wait_until(LONG, || status_of(&a).is_some_and(|s| s.files == 2));
    assert!(indexed, "a never indexed its files:\n{}", first.log_text());
    first.signal("TERM");
    first.wait_exit(LONG);
    chmod(&a.join("secret.txt"), 0o000);
    let na = start_as_nobody(&a, &ta.path().join("a.log"), broadcast);
    let nb = start_as_nobody(&b, &tb.path().join("b.log"), broadcast);
    let (retrying, _) = wait_until(LONG, || {
        b.join("open.txt").exists() && status_of(&b).is_some_and(|s| s.retrying.iter().any(|r| r.path == "secret.txt"))
    });
    assert!(retrying, "b does not show the file as retrying:\n{}", nb.log_text());
    assert!(
        na.log_text().contains("cannot be read here"),
        "a logged nothing:\n{}",
        na.log_text()
    );
    chmod(&a.join("secret.txt"), 0o644);
    let (arrived, _) = wait_until(Duration::from_secs(120), || {
        fs::read(b.join("secret.txt")).is_ok_and(|c| c == b"not yet")
    });
    assert!(arrived, "it never arrived:\n{}", nb.log_text());
}

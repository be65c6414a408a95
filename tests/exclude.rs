//! Selective sync with real processes on loopback: a host's own exclusion
//! rules (`DIR/.dirsync/exclude`) keep a folder from it while the rest
//! syncs, `dirsync status` counts what is excluded and still reports the
//! peer in sync, rules that would exclude everything are refused (at the
//! start: the node does not run; later: the rules in use stay), and
//! removing the rule brings the folder.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn set_exclusion(dir: &Path, rules: &str) {
    fs::create_dir_all(dir.join(".dirsync")).unwrap();
    fs::write(dir.join(".dirsync/exclude"), rules).unwrap();
}

fn status_text(dir: &Path) -> String {
    let out = Command::new(BIN).arg("status").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn an_excluded_folder_stays_away_until_its_rule_goes() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = two_dirs(root);
    write(&a, "videos/film.bin", &vec![7u8; 300_000]);
    write(&a, "videos/trip/clip.bin", b"clip");
    write(&a, "docs/a.txt", b"synced");
    write(&b, "videos/laptop.txt", b"only on the laptop");
    set_exclusion(&b, "# too big here\nvideos/\n");
    let (pa, pb) = (free_tcp_port(), free_tcp_port());
    let peer = |port: u16| vec!["--no-discovery".to_string(), "--peer".into(), format!("127.0.0.1:{port}")];
    let pa_proc = Proc::start_args(&a, pa, &peer(pb), &root.join("a.log"));
    let pb_proc = Proc::start_args(&b, pb, &peer(pa), &root.join("b.log"));
    let logs = || format!("{}\n{}", pa_proc.log_text(), pb_proc.log_text());

    // The rest syncs; the folder does not, either way; the status counts
    // the four paths excluded (videos, its two files, trip) and shows the
    // peer in sync.
    let (ok, _) = wait_until(TIMEOUT, || {
        status_of(&b).is_some_and(|s| s.excluded == 4 && s.peers.len() == 1 && s.peers[0].digest == Some(s.digest))
            && tree(&b).contains_key("docs/a.txt")
    });
    assert!(
        ok,
        "b never showed the folder excluded and the peer in sync: {:?}\n{}",
        status_of(&b),
        logs()
    );
    assert!(!b.join("videos/film.bin").exists() && !a.join("videos/laptop.txt").exists());
    assert_eq!(fs::read(b.join("videos/laptop.txt")).unwrap(), b"only on the laptop");
    let report = status_text(&b);
    assert!(report.contains("excluded 4 paths") && report.contains("in sync"), "{report}");

    // Deleting the folder here deletes nothing there.
    fs::remove_dir_all(b.join("videos")).unwrap();
    write(&b, "docs/b.txt", b"after the deletion");
    let (ok, _) = wait_until(TIMEOUT, || a.join("docs/b.txt").exists());
    assert!(ok, "{}", logs());
    assert!(a.join("videos/film.bin").exists(), "a deletion of an excluded folder travelled");

    // Rules that would exclude everything are refused; the ones in use stay.
    set_exclusion(&b, "*\n");
    let (ok, _) = wait_until(TIMEOUT, || {
        status_of(&b).and_then(|s| s.last_error).is_some_and(|e| e.contains("every path"))
    });
    assert!(ok, "{:?}", status_of(&b));
    write(&a, "docs/c.txt", b"still synced");
    let (ok, _) = wait_until(TIMEOUT, || b.join("docs/c.txt").exists());
    assert!(ok, "{}", logs());
    assert!(!b.join("videos/film.bin").exists());

    // The rule goes: the folder arrives.
    set_exclusion(&b, "");
    let (ok, _) = wait_until(Duration::from_secs(60), || all_equal(&[&a, &b]));
    assert!(ok, "the folder never arrived:\n{}\n{}", describe_difference(&[&a, &b]), logs());
    assert_eq!(status_of(&b).map(|s| s.excluded), Some(0));
}

#[test]
fn rules_that_exclude_everything_stop_the_start() {
    let d = tempfile::tempdir().unwrap();
    set_exclusion(d.path(), "# oops\n*\n");
    let out = Command::new(BIN)
        .arg(d.path())
        .args(["-l", &free_tcp_port().to_string(), "--no-discovery"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exclude") && err.contains("every path"), "{err}");
}

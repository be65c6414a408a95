//! The command line: every bad input gives one clear line and a non-zero
//! exit, never a panic or a backtrace.

mod common;

use common::*;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A case that wrongly starts a node must not hang the test.
    let (done, _) = wait_until(Duration::from_secs(10), || child.try_wait().unwrap().is_some());
    if !done {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

/// The run failed with `code`, and stderr has exactly one error line
/// containing `needle`.
fn assert_clean_failure(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    let error_lines: Vec<_> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error_lines.len(), 1, "expected one error line, got: {err}");
    assert!(error_lines[0].contains(needle), "{needle:?} not in {err}");
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("dirsync {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--broadcast-port",
        "--listen-port",
        "--signature-dir",
        "--broadcast-addr",
        "--rescan-interval",
        "--peer",
        "--no-discovery",
        "dirsync status",
        ".dirsyncignore",
        "SIGTERM",
        "Exit codes",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let out = run(&["status", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["Usage: dirsync status", "--json", "Exit codes", "3 no node runs"] {
        assert!(help.contains(word), "{word} missing from status --help:\n{help}");
    }
}

#[test]
fn bad_peer_addresses() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    for bad in ["nohost", "host:", ":6000", "host:0", "host:70000", "host:port"] {
        assert_clean_failure(&run(&[dir, "--peer", bad]), 2, &format!("--peer {bad}"));
    }
    assert_clean_failure(&run(&["status", dir, "--bogus"]), 2, "--bogus");
}

#[test]
fn missing_dir_argument() {
    assert_clean_failure(&run(&[]), 2, "missing DIR");
}

#[test]
fn nonexistent_dir() {
    assert_clean_failure(&run(&["/nonexistent/dirsync-test"]), 2, "no such directory");
}

#[test]
fn a_file_instead_of_a_dir() {
    let f = tempfile::NamedTempFile::new().unwrap();
    assert_clean_failure(&run(&[f.path().to_str().unwrap()]), 2, "not a directory");
}

#[test]
fn bad_flags_and_values() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    for (args, needle) in [
        (vec![dir, "--no-such-flag"], "--no-such-flag"),
        (vec![dir, "-l", "notaport"], "'-l' with value 'notaport'"),
        (vec![dir, "-l", "70000"], "'-l' with value '70000'"),
        (vec![dir, "--broadcast-addr", "nowhere"], "broadcast-addr"),
        (vec![dir, "--max-send-rate", "fast"], "give a number and a unit"),
        (vec![dir, "--max-recv-rate", "20Mb/s"], "ambiguous"),
        (vec![dir, "--max-send-rate", "0"], "more than 0"),
    ] {
        assert_clean_failure(&run(&args), 2, needle);
    }
    assert_clean_failure(&run(&[dir, "-l", "0"]), 2, "--listen-port");
}

#[test]
fn port_in_use() {
    let d = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let bport = free_udp_port().to_string();
    let out = run(&[d.path().to_str().unwrap(), "-l", &port, "-b", &bport]);
    assert_clean_failure(&out, 1, &format!("cannot listen on TCP port {port}"));
    // Its cause once, not twice (issue 13).
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("in use").count(), 1, "{err}");
}

#[test]
fn unwritable_signature_dir() {
    let d = tempfile::tempdir().unwrap();
    // Below a regular file, so even root cannot create it.
    let f = tempfile::NamedTempFile::new().unwrap();
    let sig = f.path().join("sigs");
    let out = run(&[
        d.path().to_str().unwrap(),
        "-s",
        sig.to_str().unwrap(),
        "-l",
        &free_tcp_port().to_string(),
    ]);
    assert_clean_failure(&out, 1, "state directory");
}

#[test]
fn signature_dir_inside_the_synced_dir_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let sig = d.path().join("sigs");
    let out = run(&[d.path().to_str().unwrap(), "-s", sig.to_str().unwrap()]);
    assert_clean_failure(&out, 2, "lies inside DIR");
}

/// Issue 13, bug 8: a state directory inside DIR by way of a symlink, or
/// of `..` through folders that do not exist yet, passed the check, and
/// the node then synced its own index to its peers.
#[test]
fn signature_dir_reaching_into_the_synced_dir_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let d = outside.path().join("synced");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink(&d, outside.path().join("link")).unwrap();
    let through_link = outside.path().join("link/state");
    let through_missing = outside.path().join("new/deeper/../../synced/state");
    for sig in [through_link, through_missing] {
        let out = run(&[d.to_str().unwrap(), "-s", sig.to_str().unwrap(), "-l", &free_tcp_port().to_string()]);
        assert_clean_failure(&out, 2, "lies inside DIR");
        assert!(!d.join("state").exists(), "{} was created", sig.display());
    }
}

/// Issue 26, item 2: `dirsync /` indexed the whole machine and hung on
/// /proc. The root is refused, however it is written, and nothing is made.
#[test]
fn the_filesystem_root_is_refused() {
    for root in ["/", "//", "/.", "/tmp/.."] {
        let out = run(&[root, "-l", &free_tcp_port().to_string()]);
        assert_clean_failure(&out, 2, "root of the filesystem");
    }
}

/// Issue 26, item 4: `-s ""` put the state in the working directory.
#[test]
fn an_empty_signature_dir_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([d.path().to_str().unwrap(), "-s", "", "-l", &free_tcp_port().to_string()])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_clean_failure(&out, 2, "--signature-dir is empty");
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "something was made in the working directory"
    );
    let out = run(&["status", d.path().to_str().unwrap(), "-s", ""]);
    assert_clean_failure(&out, 2, "--signature-dir is empty");
}

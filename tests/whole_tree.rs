//! The whole tree, not just its files (issue 28): real `dirsync` processes
//! carry symlinks as symlinks (never following them) and permission bits,
//! so that a Python virtual environment runs on the other host and a git
//! checkout stays clean there.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn pair(root: &Path) -> (std::path::PathBuf, std::path::PathBuf, Proc, Proc) {
    let (a, b) = two_dirs(root);
    let bport = free_udp_port();
    let pa = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let pb = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));
    (a, b, pa, pb)
}

fn converge(a: &Path, b: &Path, what: &str, procs: &[&Proc]) {
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[a, b]));
    if !ok {
        let logs: Vec<String> = procs.iter().map(|p| p.log_text()).collect();
        panic!("{what}: trees differ:\n{}\n{}", describe_difference(&[a, b]), logs.join("\n---\n"));
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `python3 -m venv` works here, installing Debian's python3-venv if it
/// is missing.
fn venv_available() -> bool {
    let works = || {
        Command::new("python3")
            .args(["-m", "venv", "--help"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !works() {
        let _ = Command::new("apt-get").args(["install", "-y", "-q", "python3-venv"]).status();
    }
    works()
}

#[test]
fn a_venv_made_on_one_host_runs_on_the_other() {
    assert!(
        venv_available(),
        "python3 -m venv is not available and python3-venv could not be installed"
    );
    let scratch = tempfile::tempdir().unwrap();
    let (a, b, pa, pb) = pair(scratch.path());
    run(Command::new("python3").args(["-m", "venv", "--without-pip"]).arg(a.join("venv")));
    let links: Vec<String> = fs::read_dir(a.join("venv/bin"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_symlink())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(!links.is_empty(), "a venv holds symlinks to its interpreter");
    converge(&a, &b, "the venv", &[&pa, &pb]);
    for name in &links {
        let link = b.join("venv/bin").join(name);
        assert!(
            fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
            "{name} arrived as a link"
        );
        assert_eq!(fs::read_link(&link).unwrap(), fs::read_link(a.join("venv/bin").join(name)).unwrap());
    }
    let out = run(Command::new(b.join("venv/bin/python")).args(["-c", "import sys; print(1, sys.prefix)"]));
    assert!(out.starts_with("1 ") && out.trim_end().ends_with("venv"), "{out}");
    assert!(out.contains(b.to_str().unwrap()), "the venv on b runs as b's: {out}");
}

#[test]
fn a_git_checkout_with_read_only_objects_is_clean_on_the_other_host() {
    let scratch = tempfile::tempdir().unwrap();
    let (a, b, pa, pb) = pair(scratch.path());
    let git = |dir: &Path, args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
            .args(args))
    };
    git(&a, &["init", "-q", "repo"]);
    let repo_a = a.join("repo");
    write(&repo_a, "src/main.rs", b"fn main() {}\n");
    write(&repo_a, "run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(repo_a.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(repo_a.join("src/main.rs"), fs::Permissions::from_mode(0o640)).unwrap();
    git(&repo_a, &["add", "-A"]);
    git(&repo_a, &["commit", "-q", "-m", "first"]);
    converge(&a, &b, "the checkout", &[&pa, &pb]);
    let repo_b = b.join("repo");
    // Git's objects are read-only (0444): they arrive so.
    let objects: Vec<_> = walk(&repo_a.join(".git/objects")).into_iter().filter(|p| p.is_file()).collect();
    assert!(!objects.is_empty());
    for o in &objects {
        let there = repo_b.join(o.strip_prefix(&repo_a).unwrap());
        assert_eq!(mode(o), 0o444, "{}", o.display());
        assert_eq!(mode(&there), 0o444, "{}", there.display());
    }
    assert_eq!(mode(&repo_b.join("run.sh")), 0o755);
    assert_eq!(mode(&repo_b.join("src/main.rs")), 0o640);
    git(&repo_b, &["fsck", "--strict"]);
    let status = git(&repo_b, &["status", "--porcelain"]);
    assert_eq!(status, "", "git status on b");
    // git status may refresh its index on b; that travels back, and a's
    // checkout stays clean too.
    converge(&a, &b, "after git status on b", &[&pa, &pb]);
    assert_eq!(git(&repo_a, &["status", "--porcelain"]), "", "git status on a");
}

#[test]
fn links_out_of_dir_arrive_as_links_and_are_never_followed() {
    let scratch = tempfile::tempdir().unwrap();
    let outside = scratch.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"not synced").unwrap();
    let (a, b, pa, pb) = pair(scratch.path());
    let links = [
        ("etc", "/etc"),
        ("up", ".."),
        ("outside", outside.to_str().unwrap()),
        ("dangling", "no/such/file"),
        ("d/latest", "v3/"),
    ];
    fs::create_dir_all(a.join("d/v3")).unwrap();
    write(&a, "d/v3/notes.txt", b"v3 notes");
    for (at, to) in links {
        std::os::unix::fs::symlink(to, a.join(at)).unwrap();
    }
    converge(&a, &b, "links", &[&pa, &pb]);
    for (at, to) in links {
        let got = b.join(at);
        assert!(fs::symlink_metadata(&got).unwrap().file_type().is_symlink(), "{at}");
        assert_eq!(fs::read_link(&got).unwrap(), Path::new(to), "{at}");
    }
    let t = tree(&b);
    assert!(
        !t.keys()
            .any(|p| p.starts_with("outside/") || p.starts_with("etc/") || p.starts_with("up/")),
        "followed: {t:?}"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "nothing was written outside DIR");

    // Links replaced by files and folders, and back, in both directions.
    fs::remove_file(b.join("dangling")).unwrap();
    write(&b, "dangling", b"a file now");
    fs::remove_file(b.join("d/latest")).unwrap();
    write(&b, "d/latest/inside.txt", b"a folder now");
    converge(&a, &b, "links replaced on b", &[&pa, &pb]);
    assert_eq!(fs::read(a.join("dangling")).unwrap(), b"a file now");
    assert!(fs::symlink_metadata(a.join("d/latest")).unwrap().is_dir());
    fs::remove_file(a.join("dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", a.join("dangling")).unwrap();
    fs::remove_dir_all(a.join("d/latest")).unwrap();
    std::os::unix::fs::symlink("v3", a.join("d/latest")).unwrap();
    fs::remove_file(a.join("etc")).unwrap();
    std::os::unix::fs::symlink("/var", a.join("etc")).unwrap();
    converge(&a, &b, "links back on a", &[&pa, &pb]);
    assert_eq!(fs::read_link(b.join("dangling")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(fs::read_link(b.join("etc")).unwrap(), Path::new("/var"));
    // A deleted link goes, and what it pointed to stays.
    fs::remove_file(a.join("outside")).unwrap();
    converge(&a, &b, "a link deleted", &[&pa, &pb]);
    assert!(fs::symlink_metadata(b.join("outside")).is_err());
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"not synced");
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn without_perms_only_the_execute_bit_travels() {
    let scratch = tempfile::tempdir().unwrap();
    let (a, b) = two_dirs(scratch.path());
    let bport = free_udp_port();
    let pa = Proc::start(&a, free_tcp_port(), bport, &scratch.path().join("a.log"));
    let pb = Proc::start_with(&b, free_tcp_port(), bport, &scratch.path().join("b.log"), &["--no-perms"], &[]);
    write(&a, "private.txt", b"p");
    write(&a, "tool", b"#!/bin/sh\n");
    fs::set_permissions(a.join("private.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(a.join("tool"), fs::Permissions::from_mode(0o700)).unwrap();
    let (ok, _) = wait_until(TIMEOUT, || {
        b.join("tool").exists() && b.join("private.txt").exists() && mode(&b.join("tool")) & 0o100 != 0
    });
    assert!(ok, "{}\n{}", pa.log_text(), pb.log_text());
    // b keeps its own modes but for the execute bit, and sends none back.
    assert_eq!(mode(&b.join("private.txt")), 0o644);
    assert_eq!(mode(&b.join("tool")), 0o755);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mode(&a.join("private.txt")), 0o600);
    assert_eq!(mode(&a.join("tool")), 0o700);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// `user.` extended attributes of `p`, not following a link.
fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "{}: {}", p.display(), std::io::Error::last_os_error());
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| n.starts_with(b"user.")) {
        let cname = std::ffi::CString::new(name).unwrap();
        let mut value = vec![0u8; 4096];
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        assert!(n >= 0, "{}: {}", p.display(), std::io::Error::last_os_error());
        value.truncate(n as usize);
        out.push((String::from_utf8_lossy(name).to_string(), value));
    }
    out.sort();
    out
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "{}: {}", p.display(), std::io::Error::last_os_error());
}

fn remove_xattr(p: &Path, name: &str) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    assert_eq!(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }, 0);
}

/// `--xattrs` on both hosts: a file's and a folder's `user.` attributes
/// arrive with them, and a change of one alone travels both ways (added,
/// changed, removed). A host without `--xattrs` leaves its own alone.
#[test]
fn extended_attributes_travel_with_xattrs() {
    let scratch = tempfile::tempdir().unwrap();
    let (a, b) = two_dirs(scratch.path());
    let bport = free_udp_port();
    let log = |n: &str| scratch.path().join(n);
    let pa = Proc::start_with(&a, free_tcp_port(), bport, &log("a.log"), &["--xattrs"], &[]);
    let pb = Proc::start_with(&b, free_tcp_port(), bport, &log("b.log"), &["--xattrs"], &[]);
    // Made in a scratch folder, then moved in whole: the first look sees
    // the attributes with the file.
    let outside = scratch.path().join("outside");
    fs::create_dir_all(outside.join("album")).unwrap();
    fs::write(outside.join("album/photo.jpg"), b"jpeg").unwrap();
    set_xattr(
        &outside.join("album/photo.jpg"),
        "user.xdg.origin.url",
        b"https://example.invalid/p.jpg",
    );
    set_xattr(&outside.join("album/photo.jpg"), "user.empty", b"");
    set_xattr(&outside.join("album"), "user.tag", &[0, 1, 255]);
    fs::rename(outside.join("album"), a.join("album")).unwrap();
    let same = |p: &str| b.join(p).exists() && xattrs(&a.join(p)) == xattrs(&b.join(p));
    let (ok, _) = wait_until(TIMEOUT, || same("album/photo.jpg") && same("album"));
    assert!(
        ok,
        "{:?} {:?}\n{}\n{}",
        xattrs(&a.join("album/photo.jpg")),
        xattrs(&b.join("album/photo.jpg")),
        pa.log_text(),
        pb.log_text()
    );
    assert_eq!(xattrs(&b.join("album/photo.jpg")).len(), 2);
    // Changed alone on b, then removed on a.
    set_xattr(&b.join("album/photo.jpg"), "user.empty", b"now full");
    let (ok, _) = wait_until(TIMEOUT, || {
        xattrs(&a.join("album/photo.jpg"))
            .iter()
            .any(|(n, v)| n == "user.empty" && v == b"now full")
    });
    assert!(ok, "{}\n{}", pa.log_text(), pb.log_text());
    remove_xattr(&a.join("album/photo.jpg"), "user.xdg.origin.url");
    let (ok, _) = wait_until(TIMEOUT, || xattrs(&b.join("album/photo.jpg")).len() == 1);
    assert!(ok, "{}\n{}", pa.log_text(), pb.log_text());
    assert_eq!(fs::read(b.join("album/photo.jpg")).unwrap(), b"jpeg");
    drop(pb);
    // A host without `--xattrs` neither sets nor sends them.
    let c = scratch.path().join("c");
    fs::create_dir_all(&c).unwrap();
    let pc = Proc::start(&c, free_tcp_port(), bport, &log("c.log"));
    let (ok, _) = wait_until(TIMEOUT, || c.join("album/photo.jpg").exists());
    assert!(ok, "{}", pc.log_text());
    assert_eq!(xattrs(&c.join("album/photo.jpg")), vec![]);
    set_xattr(&c.join("album/photo.jpg"), "user.local", b"c");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        xattrs(&a.join("album/photo.jpg")),
        vec![("user.empty".to_string(), b"now full".to_vec())]
    );
}

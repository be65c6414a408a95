//! Helpers for tests that run real `dirsync` processes on loopback.
#![allow(dead_code, unused_imports)]

use dirsync::node::status::{CounterValues, Status};
use std::cell::RefCell;
use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use dirsync_sim::tree::{Item, Tree, TreeReader};

pub const BIN: &str = env!("CARGO_BIN_EXE_dirsync");

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `dirsync` process, killed on drop; its stderr goes to `log`.
pub struct Proc {
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub listen_port: u16,
}

impl Proc {
    pub fn start(dir: &Path, listen_port: u16, broadcast_port: u16, log: &Path) -> Proc {
        Proc::start_with(dir, listen_port, broadcast_port, log, &[], &[])
    }

    /// `start` with extra flags and environment variables.
    pub fn start_with(dir: &Path, listen_port: u16, broadcast_port: u16, log: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg(dir)
            .args(["-l", &listen_port.to_string(), "-b", &broadcast_port.to_string()])
            .args(["--broadcast-addr", "127.255.255.255"])
            .args(args)
            .envs(env.iter().copied());
        Proc::spawn(cmd, dir, listen_port, log)
    }

    /// Start with `args` instead of the loopback broadcast flags.
    pub fn start_args(dir: &Path, listen_port: u16, args: &[String], log: &Path) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg(dir).args(["-l", &listen_port.to_string()]).args(args);
        Proc::spawn(cmd, dir, listen_port, log)
    }

    /// Run `cmd` (a node on `dir` listening on `listen_port`, maybe behind
    /// a wrapper such as `setpriv` or `unshare`), its stderr appended to
    /// `log`: with no key from the test's own environment, unless `cmd`
    /// sets one.
    pub fn spawn(mut cmd: Command, dir: &Path, listen_port: u16, log: &Path) -> Proc {
        if !cmd.get_envs().any(|(k, _)| k == "DIRSYNC_KEY_FILE") {
            cmd.env_remove("DIRSYNC_KEY_FILE");
        }
        let err = fs::File::options().create(true).append(true).open(log).unwrap();
        let child = cmd
            // DIRSYNC_TEST_LOG (e.g. `dirsync=debug`) to see more of a failing test.
            .env("RUST_LOG", std::env::var("DIRSYNC_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Proc {
            child,
            dir: dir.to_path_buf(),
            log: log.to_path_buf(),
            listen_port,
        }
    }

    /// Send `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Wait up to `timeout` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        let (done, _) = wait_until(timeout, || match self.child.try_wait() {
            Ok(Some(s)) => {
                code = s.code();
                true
            }
            _ => false,
        });
        assert!(done, "the process did not exit within {timeout:?}:\n{}", self.log_text());
        code
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The node's `dirsync status --json`; `None` while it does not answer.
    pub fn status(&self) -> Option<Status> {
        status_of(&self.dir)
    }

    /// The node's counters now (waiting up to 30 s for it to answer).
    pub fn counters(&self) -> CounterValues {
        let mut status = None;
        let (ok, _) = wait_until(Duration::from_secs(30), || {
            status = self.status();
            status.is_some()
        });
        assert!(
            ok,
            "the node on {} does not answer `dirsync status`:\n{}",
            self.dir.display(),
            self.log_text()
        );
        status.unwrap().counters
    }

    /// Poll the node's counters until `cond` holds or `timeout` passes;
    /// whether it held, and the last reading (for the failure message).
    pub fn wait_counters(&self, timeout: Duration, mut cond: impl FnMut(&CounterValues) -> bool) -> (bool, CounterValues) {
        let mut last = CounterValues::default();
        let (ok, _) = wait_until(timeout, || match self.status() {
            Some(s) => {
                last = s.counters;
                cond(&last)
            }
            None => false,
        });
        (ok, last)
    }
}

/// `dirsync status DIR --json`, parsed: what the node running on `dir`
/// reports; `None` while no node answers there.
pub fn status_of(dir: &Path) -> Option<Status> {
    let out = Command::new(BIN)
        .arg("status")
        .arg(dir)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let status = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`dirsync status --json` printed what does not parse ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Some(status)
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The synced tree under `root`, as the simulation reads it (one oracle
/// for both: `dirsync_sim::tree`): dirsync's state folder and temp files
/// left out; files by content hash, size and mtime, folders by kind.
/// Hashes are cached per thread while a file's inode, size, mtime and ctime
/// stay the same, so polling a tree with large files stays cheap.
pub fn tree(root: &Path) -> Tree {
    read_tree(root).0
}

/// The temp files (`.dirsync-tmp-*`) under `root`, relative paths.
pub fn temp_files(root: &Path) -> Vec<String> {
    read_tree(root).1
}

fn read_tree(root: &Path) -> (Tree, Vec<String>) {
    thread_local! {
        static READER: RefCell<TreeReader> = RefCell::default();
    }
    READER.with(|r| r.borrow_mut().read(root))
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes; returns
/// whether it held and how long it took.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> (bool, Duration) {
    let start = Instant::now();
    loop {
        if cond() {
            return (true, start.elapsed());
        }
        if start.elapsed() > timeout {
            return (false, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when every tree is the same as the first.
pub fn all_equal(dirs: &[&Path]) -> bool {
    let first = tree(dirs[0]);
    dirs[1..].iter().all(|d| tree(d) == first)
}

/// A readable description of how the trees differ, for failure messages.
pub fn describe_difference(dirs: &[&Path]) -> String {
    let first = tree(dirs[0]);
    let name = dirs[0].display().to_string();
    dirs[1..]
        .iter()
        .map(|d| dirsync_sim::tree::describe_difference(&name, &first, &d.display().to_string(), &tree(d)))
        .collect()
}

/// Two empty synced folders `a` and `b` under `root`.
pub fn two_dirs(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (root.join("a"), root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    (a, b)
}

/// The disk space a file takes (its allocated blocks; 0 if it is gone).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).map_or(0, |m| m.blocks() * 512)
}

pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

//! Helpers for tests that run real `dirsync` processes on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let err = fs::File::options().create(true).append(true).open(log).unwrap();
        let child = Command::new(BIN)
            .arg(dir)
            .args(["-l", &listen_port.to_string(), "-b", &broadcast_port.to_string()])
            .args(["--broadcast-addr", "127.255.255.255"])
            .args(args)
            .env_remove("DIRSYNC_KEY_FILE")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
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

    /// Start with `args` instead of the loopback broadcast flags.
    pub fn start_args(dir: &Path, listen_port: u16, args: &[String], log: &Path) -> Proc {
        let err = fs::File::options().create(true).append(true).open(log).unwrap();
        let child = Command::new(BIN)
            .arg(dir)
            .args(["-l", &listen_port.to_string()])
            .args(args)
            .env_remove("DIRSYNC_KEY_FILE")
            .env("RUST_LOG", "info")
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
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a test compares: kind, content hash and mtime (ns) per path.
pub type Tree = BTreeMap<String, (char, String, i64)>;

/// The synced tree under `root`: dirsync's own state and temp files left out.
pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let name = e.file_name().to_string_lossy().to_string();
            if rel == ".dirsync" || name.starts_with(".dirsync-tmp-") {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                out.insert(rel, ('d', String::new(), 0));
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
                out.insert(rel, ('f', blake3::hash(&bytes).to_hex().to_string(), mtime));
            }
        }
    }
    out
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
    let mut out = String::new();
    for d in &dirs[1..] {
        let t = tree(d);
        for (k, v) in &first {
            match t.get(k) {
                None => out += &format!("{} lacks {k}\n", d.display()),
                Some(w) if w != v => out += &format!("{} differs at {k}: {v:?} vs {w:?}\n", d.display()),
                _ => {}
            }
        }
        for k in t.keys().filter(|k| !first.contains_key(*k)) {
            out += &format!("{} has extra {k}\n", d.display());
        }
    }
    out
}

pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

//! The node's local control: what a running node tells `dirsync status`
//! (and the progress display), and the Unix socket it listens on in the
//! state directory.
//!
//! Owns: the `Status` report, the request channel into the node loop, the
//! control socket (owner-only: the state directory is 0700, the socket
//! 0600), its twin in the user's runtime folder (which answers while the
//! state directory is gone), and their client. The socket is production IO on std threads, kept
//! out of the `Net` trait: the node only sees `StatusRequest`s on a
//! channel, so the same node code runs in the simulation without it. Must
//! not: change anything in the node (the control socket is read-only).

use crate::node::status::{Status, StatusRequest};
use crate::wire::PROTOCOL_VERSION;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The control socket's name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// How long a client waits for the node's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Status {
    /// The report `dirsync status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += &format!("node     {}  {}  (TCP port {})\n", self.node, self.dir, self.listen_port);
        out += &format!("tree     {}  {}, {}\n", self.digest, files(self.files), human_bytes(self.bytes));
        if self.peers.is_empty() {
            out += "peers    none connected\n";
        } else {
            out += &format!("peers    {}\n", self.peers.len());
        }
        for p in &self.peers {
            let state = if p.synced { "synchronized" } else { "syncing" };
            let tree = match p.digest {
                // Equal digests say nothing of what cannot be read here.
                Some(d) if d == p.ours && self.unreadable_total > 0 => {
                    format!("tree {}  in sync but for what cannot be read here", d.short())
                }
                Some(d) if d == p.ours => format!("tree {}  in sync", d.short()),
                Some(d) => format!("tree {}  differs", d.short()),
                None => "tree unknown".to_string(),
            };
            // A peer still on the older version, for whoever upgrades the
            // network host by host.
            let older = match p.protocol {
                v if v != 0 && v < PROTOCOL_VERSION => format!("  (protocol {v})"),
                _ => String::new(),
            };
            out += &format!("  {}  {:<21}  {:<12}  {}{}\n", p.id, p.addr, state, tree, older);
        }
        for u in &self.unreachable {
            let why = u.last_failure.as_deref().map(|w| format!(" (last try: {w})")).unwrap_or_default();
            out += &format!(
                "  {:<16}  {:<21}  not connected, next try in {} s{why}\n",
                "(--peer)", u.addr, u.next_try_secs
            );
        }
        let (rf, rb) = self
            .peers
            .iter()
            .fold((0, 0), |(f, b), p| (f + p.receive_files, b + p.receive_bytes));
        let (sf, sb) = self.peers.iter().fold((0, 0), |(f, b), p| (f + p.send_files, b + p.send_bytes));
        out += &format!(
            "pending  receiving {} ({}), sending {} ({})\n",
            files(rf),
            human_bytes(rb),
            files(sf),
            human_bytes(sb)
        );
        if self.hashing > 0 {
            out += &format!("hashing  {} (new or changed here, announced once hashed)\n", files(self.hashing));
        }
        if self.excluded > 0 {
            let paths = if self.excluded == 1 {
                "1 path".to_string()
            } else {
                format!("{} paths", self.excluded)
            };
            out += &format!("excluded {paths} held by peers, not synced here (rules in the state directory's exclude file)\n");
        }
        if let Some(why) = &self.suspended {
            out += &format!("NOT SYNCING  {why}\n");
        }
        if self.unreadable_total > 0 {
            out +=
                &format!(
                "UNREADABLE {} here: unknown, not synced; no deletion made here travels meanwhile (fix the permissions, or exclude them)\n",
                if self.unreadable_total == 1 { "1 path".to_string() } else { format!("{} paths", self.unreadable_total) }
            );
            for p in &self.unreadable {
                out += &format!("  {p}\n");
            }
        }
        if self.retrying_total > 0 {
            out += &format!("retrying {} (failed, tried again with backoff)\n", files(self.retrying_total));
            for r in &self.retrying {
                out += &format!("  {}  ({} attempts)  {}\n", r.path, r.attempts, r.error);
            }
        }
        if self.trash_bytes > 0 {
            out += &format!("trash    {} (dirsync trash lists it)\n", human_bytes(self.trash_bytes));
        }
        out += &format!("error    {}\n", self.last_error.as_deref().unwrap_or("none"));
        out
    }
}

/// `1 file`, `2 files`.
fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no dirsync node is running for this directory (no control socket at {0})")]
    NotRunning(String),
    #[error("another dirsync node already runs on this state directory (its control socket {0} answers)")]
    AlreadyRunning(String),
    #[error("control socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the node did not answer within {0:?} (busy, e.g. hashing a large tree at start? try again)")]
    NoAnswer(Duration),
    #[error("the node sent an answer that does not parse: {0}")]
    BadAnswer(String),
}

/// The control socket's path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// The folder of this user's twin sockets: `$XDG_RUNTIME_DIR/dirsync`,
/// else `<temp dir>/dirsync-<uid>`.
fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("dirsync"),
        None => std::env::temp_dir().join(format!("dirsync-{}", effective_uid())),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The twin of the control socket of `state_dir`, outside it: in this
/// user's runtime folder, named by a hash of the state directory's path.
/// It answers while the state directory is gone: with the default state
/// directory, removing it (DIR's marker) suspends the node, which must not
/// make it again, and `dirsync status` still has to reach the node.
pub fn twin_socket_path(state_dir: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let hash = blake3::hash(state_dir.as_os_str().as_bytes()).to_hex();
    runtime_dir().join(format!("{}.sock", &hash.as_str()[..32]))
}

/// Make the runtime folder (0700), and check it is this user's alone: a
/// folder another user made (in a shared temp dir) is not used.
fn prepare_runtime_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != effective_uid() || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private folder of this user",
            dir.display()
        )));
    }
    Ok(())
}

/// Make the state directory owner-only (0700).
pub fn restrict_state_dir(state_dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
}

/// How often the control thread looks for a client while none comes.
const POLL: Duration = Duration::from_millis(100);
/// How often it checks that its socket files are still there.
const RECHECK: Duration = Duration::from_secs(1);

/// The control socket, listening (with its twin, see `twin_socket_path`);
/// its thread stops and its socket files are removed when dropped.
pub struct ControlSocket {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One socket file the control thread listens on.
struct Listening {
    path: PathBuf,
    /// Make its folder when it is missing (the runtime folder; never the
    /// state directory, which is the node's, or the user's when it is
    /// DIR's marker).
    make_dir: bool,
    /// The listener and the socket file's (device, inode): `None` while
    /// the file cannot be made.
    bound: Option<(UnixListener, (u64, u64))>,
}

impl Listening {
    fn new(path: PathBuf, make_dir: bool) -> Listening {
        Listening {
            path,
            make_dir,
            bound: None,
        }
    }

    /// Listen at the path, replacing a socket file left by a node that is
    /// gone; one that answers is another node's.
    fn bind(&mut self) -> Result<(), ControlError> {
        use std::os::unix::fs::MetadataExt;
        let shown = self.path.display().to_string();
        let err = |source| ControlError::Io {
            path: shown.clone(),
            source,
        };
        if self.make_dir {
            if let Some(dir) = self.path.parent() {
                prepare_runtime_dir(dir).map_err(err)?;
            }
        }
        if std::fs::symlink_metadata(&self.path).is_ok() {
            if UnixStream::connect(&self.path).is_ok() {
                return Err(ControlError::AlreadyRunning(shown));
            }
            std::fs::remove_file(&self.path).map_err(err)?;
        }
        let listener = UnixListener::bind(&self.path).map_err(err)?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let m = std::fs::symlink_metadata(&self.path).map_err(err)?;
        self.bound = Some((listener, (m.dev(), m.ino())));
        Ok(())
    }

    /// The socket file at the path is the one we listen on.
    fn in_place(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some((_, id)) = &self.bound else { return false };
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == *id)
    }

    /// Listen again when the socket file went (its folder was removed, or
    /// the file itself): once its folder is there again, or at once when
    /// the folder is ours to make.
    fn keep(&mut self) {
        if self.in_place() {
            return;
        }
        let folder_there = self.path.parent().is_some_and(Path::is_dir);
        if !folder_there && !self.make_dir {
            return;
        }
        self.bound = None;
        match self.bind() {
            Ok(()) => info!(path = %self.path.display(), "control socket made again"),
            Err(e) => debug!(error = %e, "control socket not made again yet"),
        }
    }

    /// Remove the socket file if it is still ours.
    fn remove(&self) {
        if self.in_place() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listen on the control socket in `state_dir`, and on its twin in the
/// runtime folder, and answer every client with the node's status, asked
/// over `requests`. A socket file left by a node that is gone is replaced;
/// one that answers means another node runs. A socket file that goes
/// (with its folder) is made again once its folder is back: so `dirsync
/// status` reaches the node in every state, its twin while the state
/// directory is gone.
pub fn serve(state_dir: &Path, requests: async_channel::Sender<StatusRequest>) -> Result<ControlSocket, ControlError> {
    let mut main = Listening::new(socket_path(state_dir), false);
    let mut twin = Listening::new(twin_socket_path(state_dir), true);
    // Another node's twin answers even while its state directory is gone.
    if UnixStream::connect(&twin.path).is_ok() {
        return Err(ControlError::AlreadyRunning(twin.path.display().to_string()));
    }
    main.bind()?;
    if let Err(e) = twin.bind() {
        warn!(error = %e, "no second control socket: `dirsync status` will not reach this node while its state directory is gone");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut sockets = [main, twin];
            let mut checked = Instant::now();
            while !stopped.load(Ordering::Relaxed) && !requests.is_closed() {
                let mut served = false;
                for l in &sockets {
                    let Some((listener, _)) = &l.bound else { continue };
                    match listener.accept() {
                        Ok((s, _)) => {
                            served = true;
                            if let Err(e) = s.set_nonblocking(false).and_then(|()| answer(s, &requests)) {
                                debug!(error = %e, "control client");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => warn!(error = %e, "control socket accept failed"),
                    }
                }
                if checked.elapsed() >= RECHECK {
                    checked = Instant::now();
                    for l in &mut sockets {
                        l.keep();
                    }
                }
                if !served {
                    std::thread::sleep(POLL);
                }
            }
            for l in &sockets {
                l.remove();
            }
        })
        .map_err(|source| ControlError::Io {
            path: socket_path(state_dir).display().to_string(),
            source,
        })?;
    Ok(ControlSocket {
        stop,
        thread: Some(thread),
    })
}

fn answer(mut s: UnixStream, requests: &async_channel::Sender<StatusRequest>) -> std::io::Result<()> {
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    // One request line; only "status" is spoken.
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&s, 256)).read_line(&mut line)?;
    if line.trim() != "status" {
        return s.write_all(b"{\"error\":\"unknown request\"}\n");
    }
    let Some(status) = ask(requests, CLIENT_TIMEOUT) else {
        return Ok(());
    };
    let mut json = serde_json::to_vec(&status).map_err(std::io::Error::other)?;
    json.push(b'\n');
    s.write_all(&json)
}

/// Ask the node loop for its status from a std thread, waiting at most
/// `timeout`: `None` if it does not answer. Waited for with a deadline,
/// not blocking: a node that stopped leaves its requests unanswered, and
/// the asking thread must end.
pub(crate) fn ask(requests: &async_channel::Sender<StatusRequest>, timeout: Duration) -> Option<Status> {
    let (req, reply) = StatusRequest::new();
    requests.send_blocking(req).ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match reply.try_recv() {
            Ok(status) => return Some(status),
            Err(async_channel::TryRecvError::Empty) if !requests.is_closed() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => return None,
        }
    }
}

/// Ask the node running on `state_dir` for its status.
pub fn query(state_dir: &Path) -> Result<Status, ControlError> {
    query_within(state_dir, CLIENT_TIMEOUT)
}

/// `query`, waiting at most `timeout` for the answer: at the control
/// socket in the state directory, else at its twin (the state directory
/// is gone: see `twin_socket_path`).
pub fn query_within(state_dir: &Path, timeout: Duration) -> Result<Status, ControlError> {
    match query_at(&socket_path(state_dir), timeout) {
        Err(ControlError::NotRunning(shown)) => match query_at(&twin_socket_path(state_dir), timeout) {
            Err(ControlError::NotRunning(_)) => Err(ControlError::NotRunning(shown)),
            other => other,
        },
        other => other,
    }
}

fn query_at(path: &Path, timeout: Duration) -> Result<Status, ControlError> {
    let shown = path.display().to_string();
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(ControlError::NotRunning(shown))
        }
        Err(source) => return Err(ControlError::Io { path: shown, source }),
    };
    let io = |source| ControlError::Io {
        path: shown.clone(),
        source,
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(b"status\n").map_err(io)?;
    let mut line = String::new();
    match BufReader::new(&s).read_line(&mut line) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return Err(ControlError::NoAnswer(timeout))
        }
        Err(e) => return Err(io(e)),
    }
    serde_json::from_str(&line).map_err(|e| ControlError::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::status::{PeerStatus, UnreachablePeer};
    use crate::wire::{Hash, NodeId};

    fn status() -> Status {
        Status {
            node: NodeId(0x1a2b),
            dir: "/srv/shared".into(),
            listen_port: 6000,
            files: 3,
            bytes: 1536,
            digest: Hash::of(b"tree"),
            peers: vec![
                PeerStatus {
                    id: NodeId(0x3c4d),
                    addr: "10.0.0.2:6000".into(),
                    synced: true,
                    digest: Some(Hash::of(b"tree")),
                    ours: Hash::of(b"tree"),
                    protocol: PROTOCOL_VERSION,
                    receive_files: 0,
                    receive_bytes: 0,
                    send_files: 0,
                    send_bytes: 0,
                    bytes_received: 10,
                    bytes_sent: 0,
                },
                PeerStatus {
                    id: NodeId(0x5e6f),
                    addr: "10.0.0.3:6000".into(),
                    synced: false,
                    digest: None,
                    ours: Hash::of(b"tree"),
                    protocol: 7,
                    receive_files: 2,
                    receive_bytes: 2 * 1024 * 1024,
                    send_files: 1,
                    send_bytes: 10,
                    bytes_received: 0,
                    bytes_sent: 0,
                },
            ],
            unreachable: vec![
                UnreachablePeer {
                    addr: "nas.lan:6000".into(),
                    next_try_secs: 4,
                    last_failure: None,
                },
                UnreachablePeer {
                    addr: "[::1]:6000".into(),
                    next_try_secs: 2,
                    last_failure: Some("[::1]:6000: Connection refused (os error 111)".into()),
                },
            ],
            ..crate::node::status::quiet_status(vec![])
        }
    }

    #[test]
    fn render_marks_peers_in_sync() {
        let text = status().render();
        assert!(text.contains("0000000000003c4d  10.0.0.2:6000"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[3].ends_with("in sync"), "{text}");
        assert!(
            lines[4].contains("syncing") && lines[4].ends_with("tree unknown  (protocol 7)"),
            "{text}"
        );
        assert!(lines[5].contains("nas.lan:6000") && lines[5].ends_with("next try in 4 s"), "{text}");
        assert!(
            lines[6].ends_with("next try in 2 s (last try: [::1]:6000: Connection refused (os error 111))"),
            "{text}"
        );
        assert!(text.contains("receiving 2 files (2.0 MiB), sending 1 file (10 B)"), "{text}");
        assert!(text.contains(&Hash::of(b"tree").to_string()), "{text}");
    }

    #[test]
    fn socket_round_trip_and_no_node() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(query(d.path()), Err(ControlError::NotRunning(_))));
        let (tx, rx) = async_channel::unbounded::<StatusRequest>();
        let sock = serve(d.path(), tx).unwrap();
        let mode = std::fs::metadata(socket_path(d.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let node = std::thread::spawn(move || {
            let req = rx.recv_blocking().unwrap();
            req.reply.send_blocking(status()).unwrap();
            rx
        });
        assert_eq!(query(d.path()).unwrap(), status());
        let _node_still_runs = node.join().unwrap();
        // A second node on the same state directory is refused.
        let (tx2, _rx2) = async_channel::unbounded();
        assert!(matches!(serve(d.path(), tx2), Err(ControlError::AlreadyRunning(_))));
        drop(sock);
        assert!(!socket_path(d.path()).exists());
    }

    /// The state directory goes (with the default one, DIR's marker: the
    /// node must not make it again): the twin in the runtime folder
    /// answers; once the folder is back, the socket in it is made again.
    #[test]
    fn status_answers_while_the_state_directory_is_gone_and_the_socket_comes_back_with_it() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path().join("state");
        std::fs::create_dir(&d).unwrap();
        let (tx, rx) = async_channel::unbounded::<StatusRequest>();
        let sock = serve(&d, tx).unwrap();
        let twin = twin_socket_path(&d);
        assert!(twin.exists());
        let node = std::thread::spawn(move || {
            while let Ok(req) = rx.recv_blocking() {
                let _ = req.reply.send_blocking(status());
            }
        });
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(query(&d).unwrap(), status(), "the twin answers");
        assert!(!d.exists(), "the state directory is not the control socket's to make");
        std::fs::create_dir(&d).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket_path(&d).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(query_at(&socket_path(&d), CLIENT_TIMEOUT).unwrap(), status());
        drop(sock);
        assert!(!socket_path(&d).exists() && !twin.exists(), "both removed when the node ends");
        drop(node);
    }

    #[test]
    fn a_busy_node_is_reported_as_such() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = async_channel::unbounded::<StatusRequest>();
        let _sock = serve(d.path(), tx).unwrap();
        // The node holds the request and never answers.
        let e = query_within(d.path(), Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, ControlError::NoAnswer(_)), "{e}");
        drop(rx);
    }
}

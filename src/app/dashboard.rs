//! The local dashboard: a web page the node serves itself, and `/metrics`
//! in Prometheus' text format, on one listener (`--dashboard`, 127.0.0.1
//! by default; `--no-dashboard` turns it off).
//!
//! Every request needs the token kept in the state directory (0600): the
//! page as `/?token=…` (what `dirsync status` prints), everything else as
//! `Authorization: Bearer …`, which a page of another site cannot send.
//! Requests naming a host that is not an address or `localhost` (DNS
//! rebinding), or coming from another origin, are refused, and actions
//! are JSON POSTs, which a form of another site cannot make.
//!
//! The server is tiny_http on its own std thread, as the control socket
//! is: the node runs on async-std, most HTTP servers want tokio, and the
//! page only needs what the control socket already reaches (the node's
//! status, over the same channel) and what works from the disk alone
//! (conflict copies, the trash), so nothing of the node loop changes.
//!
//! Owns: routing, the token and address rules, the page and the metrics
//! text. Must not: change the node (actions go through the disk, like
//! `dirsync conflicts` does, and the node syncs what they change).

use crate::fs::{conflicts, state, trash};
use crate::node::status::{Status, StatusRequest};
use serde::Deserialize;
use std::fmt::Write as _;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{debug, warn};

/// The token's file in the state directory.
pub const TOKEN_FILE: &str = "dashboard-token";
/// Where the dashboard listens unless told otherwise: this host only.
pub const DEFAULT_ADDR_V4: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8385));
/// How long a request waits for the node's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body read (an action names one path).
const MAX_BODY: u64 = 64 * 1024;
const PAGE: &str = include_str!("dashboard.html");

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("the dashboard's token {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the dashboard cannot listen on {addr}: {why} (give another address with --dashboard ADDR, or --no-dashboard)")]
    Listen { addr: SocketAddr, why: String },
}

/// The token of the node on `state_dir`, made (random, 0600) if there is
/// none yet.
pub fn token(state_dir: &Path) -> Result<String, DashboardError> {
    let path = state_dir.join(TOKEN_FILE);
    let err = |source| DashboardError::Token {
        path: path.display().to_string(),
        source,
    };
    if let Some(t) = read_token(state_dir) {
        return Ok(t);
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    std::io::Write::write_all(&mut f, t.as_bytes()).map_err(err)?;
    Ok(t)
}

/// The token of the node on `state_dir`, if it has one.
pub fn read_token(state_dir: &Path) -> Option<String> {
    let t = std::fs::read_to_string(state_dir.join(TOKEN_FILE)).ok()?;
    let t = t.trim();
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_string())
}

/// What a request is answered from.
pub struct Context {
    pub token: String,
    /// DIR and its state directory.
    pub root: PathBuf,
    pub state_dir: PathBuf,
    /// The node's status, as the control socket asks for it.
    pub requests: async_channel::Sender<StatusRequest>,
    /// `--max-send-rate` and `--max-recv-rate`, in bytes per second.
    pub send_rate: Option<u64>,
    pub recv_rate: Option<u64>,
}

/// A request, as routing needs it.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    fn json(value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status: 200,
                content_type: "application/json",
                body,
            },
            Err(e) => Reply::text(500, e.to_string()),
        }
    }
}

/// `a == b` in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of `key` in the query of `url`.
fn query_param<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Why the request is refused, if it is: the address and origin rules,
/// then the token.
fn refused(ctx: &Context, req: &Request) -> Option<Reply> {
    // A name that is not an address or localhost: a page elsewhere whose
    // name now points here (DNS rebinding).
    let host = req.header("host").unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name != "localhost" && name.parse::<std::net::IpAddr>().is_err() {
        return Some(Reply::text(403, "refused: the host must be an address or localhost"));
    }
    if req.header("origin").is_some_and(|o| o != format!("http://{host}")) {
        return Some(Reply::text(403, "refused: a request from another site"));
    }
    if req.header("sec-fetch-site").is_some_and(|s| s != "same-origin" && s != "none") {
        return Some(Reply::text(403, "refused: a request from another site"));
    }
    let bearer = req.header("authorization").and_then(|a| a.strip_prefix("Bearer "));
    // The page is opened with the token in its address; everything else
    // sends it as a header (a POST only so).
    let given = match (req.method, bearer) {
        (_, Some(t)) => Some(t),
        ("GET", None) => query_param(req.url, "token"),
        _ => None,
    };
    if !given.is_some_and(|t| same_secret(t, &ctx.token)) {
        return Some(Reply::text(
            401,
            "the dashboard's token is missing or wrong: `dirsync status` prints the address with it",
        ));
    }
    None
}

/// Answer `req`.
pub fn route(ctx: &Context, req: &Request) -> Reply {
    if let Some(no) = refused(ctx, req) {
        return no;
    }
    let path = req.url.split('?').next().unwrap_or("");
    match (req.method, path) {
        ("GET", "/") => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: PAGE.as_bytes().to_vec(),
        },
        ("GET", "/api/state") => match state(ctx) {
            Some(s) => Reply::json(&s),
            None => Reply::text(503, "the node does not answer"),
        },
        ("GET", "/metrics") => match crate::app::control::ask(&ctx.requests, STATUS_TIMEOUT) {
            Some(status) => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics(&status, conflicts_here(ctx).len()).into_bytes(),
            },
            None => Reply::text(503, "the node does not answer"),
        },
        ("POST", "/api/conflicts/keep" | "/api/conflicts/drop" | "/api/trash/restore") => act(ctx, path, req),
        (_, "/" | "/api/state" | "/metrics" | "/api/conflicts/keep" | "/api/conflicts/drop" | "/api/trash/restore") => {
            Reply::text(405, "method not allowed")
        }
        _ => Reply::text(404, "not found"),
    }
}

#[derive(serde::Serialize)]
struct State {
    status: Status,
    conflicts: Vec<conflicts::ConflictCopy>,
    trash: Vec<trash::Trashed>,
    /// The exclusion rules in force here (`STATE_DIR/exclude`), a line each.
    excluded_rules: Vec<String>,
    send_rate: Option<u64>,
    recv_rate: Option<u64>,
}

fn conflicts_here(ctx: &Context) -> Vec<conflicts::ConflictCopy> {
    let device = state::read_device_id(&ctx.state_dir).map(|d| d.to_string());
    conflicts::list(&ctx.root, device.as_deref())
}

fn state(ctx: &Context) -> Option<State> {
    Some(State {
        status: crate::app::control::ask(&ctx.requests, STATUS_TIMEOUT)?,
        conflicts: conflicts_here(ctx),
        trash: trash::list(&trash::trash_dir(&ctx.root)),
        excluded_rules: std::fs::read_to_string(ctx.state_dir.join(crate::engine::ignore::EXCLUDE_FILE))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        send_rate: ctx.send_rate,
        recv_rate: ctx.recv_rate,
    })
}

/// An action's body: the conflict copy (relative to DIR) or the kept
/// version (as the trash lists it).
#[derive(Deserialize)]
struct Target {
    path: String,
}

/// Keep or drop a conflict copy, or restore a kept version: the same as
/// `dirsync conflicts --keep/--drop`, and as copying a file out of the
/// trash; the node syncs what changed.
fn act(ctx: &Context, path: &str, req: &Request) -> Reply {
    if !req.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Reply::text(415, "actions are JSON");
    }
    let target: Target = match serde_json::from_slice(&req.body) {
        Ok(t) => t,
        Err(e) => return Reply::text(400, format!("expected {{\"path\": …}}: {e}")),
    };
    let done = match path {
        "/api/conflicts/keep" => conflicts::keep(&ctx.root, Path::new(&target.path))
            .map(|original| format!("kept: it is {original} now"))
            .map_err(|e| e.to_string()),
        "/api/conflicts/drop" => conflicts::drop_copy(&ctx.root, Path::new(&target.path))
            .map(|copy| format!("dropped {copy}"))
            .map_err(|e| e.to_string()),
        _ => trash::restore(&ctx.root, Path::new(&target.path))
            .map(|original| format!("restored {original}"))
            .map_err(|e| e.to_string()),
    };
    match done {
        Ok(message) => Reply::json(&serde_json::json!({ "done": message })),
        Err(e) => Reply::text(409, e),
    }
}

/// The status in Prometheus' text format.
pub fn metrics(s: &Status, conflict_copies: usize) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP dirsync_{name} {help}\n# TYPE dirsync_{name} {kind}\ndirsync_{name} {value}\n"
        );
    };
    let sum = |f: fn(&crate::node::status::PeerStatus) -> u64| s.peers.iter().map(f).sum::<u64>();
    metric("peers", "gauge", "Peers connected.", s.peers.len() as u64);
    metric(
        "peers_in_sync",
        "gauge",
        "Peers whose tree matches ours.",
        s.peers.iter().filter(|p| p.synced).count() as u64,
    );
    metric("files", "gauge", "Live files in the tree.", s.files);
    metric("bytes", "gauge", "Bytes of the live files in the tree.", s.bytes);
    metric("pending_files", "gauge", "Files still to receive.", sum(|p| p.receive_files));
    metric("pending_bytes", "gauge", "Bytes still to receive.", sum(|p| p.receive_bytes));
    metric(
        "retrying_paths",
        "gauge",
        "Paths whose peer version could not be taken yet.",
        s.retrying_total,
    );
    metric("conflict_copies", "gauge", "Conflict copies in the tree.", conflict_copies as u64);
    metric("trash_bytes", "gauge", "Bytes kept in the trash.", s.trash_bytes);
    metric(
        "excluded_paths",
        "gauge",
        "Paths the peers hold that this host excludes.",
        s.excluded,
    );
    metric("unreadable_paths", "gauge", "Paths that cannot be read here.", s.unreadable_total);
    metric(
        "received_bytes_total",
        "counter",
        "Wire bytes received from the peers connected now.",
        sum(|p| p.bytes_received),
    );
    metric(
        "sent_bytes_total",
        "counter",
        "Wire bytes sent to the peers connected now.",
        sum(|p| p.bytes_sent),
    );
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&s.counters) {
        for (name, value) in counters {
            if let Some(v) = value.as_u64() {
                metric(&format!("{name}_total"), "counter", "See `dirsync status --json`, counters.", v);
            }
        }
    }
    out
}

/// The dashboard, listening; stops when dropped.
pub struct Dashboard {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listen on `addr` and answer from `ctx`, on a thread of its own.
pub fn serve(addr: SocketAddr, ctx: Context) -> Result<Dashboard, DashboardError> {
    let listen_err = |why: String| DashboardError::Listen { addr, why };
    let server = Arc::new(tiny_http::Server::http(addr).map_err(|e| listen_err(e.to_string()))?);
    let bound = server.server_addr().to_ip().ok_or_else(|| listen_err("not an IP address".into()))?;
    let serving = server.clone();
    let thread = std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || {
            for mut request in serving.incoming_requests() {
                let mut body = Vec::new();
                if let Err(e) = request.as_reader().take(MAX_BODY).read_to_end(&mut body) {
                    debug!(error = %e, "dashboard request body unreadable");
                    continue;
                }
                let headers = request
                    .headers()
                    .iter()
                    .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
                    .collect();
                let method = request.method().as_str().to_string();
                let url = request.url().to_string();
                let reply = route(
                    &ctx,
                    &Request {
                        method: &method,
                        url: &url,
                        headers,
                        body,
                    },
                );
                let mut response = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
                let headers = [
                    ("Content-Type", reply.content_type),
                    ("Cache-Control", "no-store"),
                    ("Referrer-Policy", "no-referrer"),
                    ("X-Frame-Options", "DENY"),
                    ("X-Content-Type-Options", "nosniff"),
                    (
                        "Content-Security-Policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
                    ),
                ];
                for (name, value) in headers {
                    if let Ok(h) = tiny_http::Header::from_bytes(name, value) {
                        response.add_header(h);
                    }
                }
                if let Err(e) = request.respond(response) {
                    debug!(error = %e, "dashboard answer not sent");
                }
            }
        })
        .map_err(|e| listen_err(e.to_string()))?;
    if !bound.ip().is_loopback() {
        warn!(addr = %bound, "the dashboard listens beyond this host: anyone who can reach it and has the token can change this directory");
    }
    Ok(Dashboard {
        server,
        thread: Some(thread),
        addr: bound,
    })
}

/// The page's address, with its token.
pub fn url(addr: SocketAddr, token: &str) -> String {
    format!("http://{addr}/?token={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context whose node answers every status request with `status`.
    fn context(dir: &Path) -> Context {
        let (tx, rx) = async_channel::unbounded::<StatusRequest>();
        std::thread::spawn(move || {
            while let Ok(req) = rx.recv_blocking() {
                let _ = req.reply.send_blocking(crate::node::status::quiet_status(vec![]));
            }
        });
        Context {
            token: "0123456789abcdef0123456789abcdef".into(),
            root: dir.to_path_buf(),
            state_dir: dir.join(".dirsync"),
            requests: tx,
            send_rate: Some(1_000_000),
            recv_rate: None,
        }
    }

    fn get<'a>(url: &'a str, headers: &[(&str, &str)]) -> Request<'a> {
        Request {
            method: "GET",
            url,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: vec![],
        }
    }

    const HOST: (&str, &str) = ("host", "127.0.0.1:8385");
    const BEARER: (&str, &str) = ("authorization", "Bearer 0123456789abcdef0123456789abcdef");

    #[test]
    fn every_request_needs_the_token_and_a_local_same_site_origin() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let status = |req: Request| route(&ctx, &req).status;
        // The page with its token; everything else with the header.
        assert_eq!(status(get("/?token=0123456789abcdef0123456789abcdef", &[HOST])), 200);
        assert_eq!(status(get("/", &[HOST])), 401);
        assert_eq!(status(get("/?token=0123456789abcdef0123456789abcdee", &[HOST])), 401);
        assert_eq!(status(get("/api/state", &[HOST, BEARER])), 200);
        assert_eq!(status(get("/metrics", &[HOST])), 401);
        assert_eq!(status(get("/metrics", &[HOST, ("authorization", "Bearer nope")])), 401);
        assert_eq!(status(get("/metrics", &[HOST, BEARER])), 200);
        // A name that is not this host's address (DNS rebinding).
        assert_eq!(status(get("/api/state", &[("host", "evil.example:8385"), BEARER])), 403);
        assert_eq!(status(get("/api/state", &[("host", "localhost:8385"), BEARER])), 200);
        assert_eq!(status(get("/api/state", &[("host", "[::1]:8385"), BEARER])), 200);
        // Another site's page.
        assert_eq!(status(get("/api/state", &[HOST, BEARER, ("origin", "http://evil.example")])), 403);
        assert_eq!(status(get("/api/state", &[HOST, BEARER, ("sec-fetch-site", "cross-site")])), 403);
        assert_eq!(status(get("/api/state", &[HOST, BEARER, ("origin", "http://127.0.0.1:8385")])), 200);
        // An action needs the header and JSON: a form elsewhere sends neither.
        let post = |url, headers: &[(&str, &str)], body: &[u8]| Request {
            method: "POST",
            url,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: body.to_vec(),
        };
        let form = post("/api/conflicts/drop?token=0123456789abcdef0123456789abcdef", &[HOST], b"path=x");
        assert_eq!(status(form), 401);
        let not_json = post("/api/conflicts/drop", &[HOST, BEARER, ("content-type", "text/plain")], b"{}");
        assert_eq!(status(not_json), 415);
        assert_eq!(status(get("/nothing", &[HOST, BEARER])), 404);
        assert_eq!(status(get("/api/conflicts/keep", &[HOST, BEARER])), 405);
    }

    #[test]
    fn actions_keep_and_drop_conflict_copies_and_restore_from_the_trash() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let copy = "report.sync-conflict-20261125-143000-a1b2c3d4-5c2e6e6d.txt";
        std::fs::create_dir_all(dir.path().join(".dirsync")).unwrap();
        std::fs::write(dir.path().join(".dirsync/exclude"), "# big ones\nvideos/\n\n").unwrap();
        std::fs::write(dir.path().join("report.txt"), b"mine").unwrap();
        std::fs::write(dir.path().join(copy), b"theirs").unwrap();
        let post = |url: &'static str, body: String| {
            route(
                &ctx,
                &Request {
                    method: "POST",
                    url,
                    headers: vec![
                        (HOST.0.into(), HOST.1.into()),
                        (BEARER.0.into(), BEARER.1.into()),
                        ("content-type".into(), "application/json".into()),
                    ],
                    body: body.into_bytes(),
                },
            )
        };
        let state = route(&ctx, &get("/api/state", &[HOST, BEARER]));
        let state: serde_json::Value = serde_json::from_slice(&state.body).unwrap();
        assert_eq!(state["conflicts"][0]["path"], copy);
        assert_eq!(state["send_rate"], 1_000_000);
        assert_eq!(state["excluded_rules"], serde_json::json!(["videos/"]));
        let kept = post("/api/conflicts/keep", format!("{{\"path\": \"{copy}\"}}"));
        assert_eq!(kept.status, 200, "{}", String::from_utf8_lossy(&kept.body));
        assert_eq!(std::fs::read(dir.path().join("report.txt")).unwrap(), b"theirs");
        assert_eq!(
            post("/api/conflicts/drop", format!("{{\"path\": \"{copy}\"}}")).status,
            409,
            "gone now"
        );
        let gone = post("/api/trash/restore", "{\"path\": \"/etc/passwd\"}".into());
        assert_eq!(gone.status, 409);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let mut s = crate::node::status::quiet_status(vec![]);
        s.trash_bytes = 42;
        s.counters.files_received = 7;
        let text = metrics(&s, 3);
        for line in [
            "dirsync_peers 0",
            "dirsync_trash_bytes 42",
            "dirsync_conflict_copies 3",
            "dirsync_files_received_total 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("# TYPE dirsync_files_received_total counter"));
    }

    #[test]
    fn the_token_is_made_once_owner_only_and_served_over_http() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = token(dir.path()).unwrap();
        assert_eq!(token(dir.path()).unwrap(), t);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut ctx = context(dir.path());
        ctx.token = t.clone();
        let d = serve("127.0.0.1:0".parse().unwrap(), ctx).unwrap();
        let ask = |path: &str| {
            let mut s = std::net::TcpStream::connect(d.addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", d.addr).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let page = ask(&format!("/?token={t}"));
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("<title>dirsync</title>"));
        assert!(ask("/").starts_with("HTTP/1.1 401"));
        // Busy: a clear error.
        let busy = serve(d.addr, context(dir.path()));
        assert!(matches!(busy, Err(DashboardError::Listen { .. })));
    }
}

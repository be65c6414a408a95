//! The node: one event loop that owns the engine and drives its commands
//! through the network (`Net`), the disk (`Store`) and the connection tasks.
//!
//! Owns: sockets, tasks, connections (one per peer, see `keep_new`), the
//! content being received, scans, and persisting the index. Must not: make
//! sync decisions (the engine does).

use crate::conn::{self, handshake, read_frame_or_idle, Job, PeerHello, Traffic};
use crate::control::{Control, PeerStatus, Status, StatusRequest};
use crate::discovery;
use crate::engine::{Action, Command, DirState, Engine, Scan};
use crate::ignore_rules::{IgnoreRules, IGNORE_FILE};
use crate::key::ClusterKey;
use crate::limits::{
    HandshakeSlots, Queued, Slot, WarnBudget, MAX_FRAMES_IN_FLIGHT, MAX_HANDSHAKES, MAX_PEERS, MAX_QUEUED_SIGNATURE_BYTES, QUEUE_SLACK,
};
use crate::net::{Conn, Net};
use crate::receive::{Incoming, Received};
use crate::secure::{self, Link};
use crate::state::{load_device_id, load_index};
use crate::static_peers::StaticPeers;
use crate::store::{system_time_ns, Store, StoreError};
use crate::wire::{Announce, Entry, Hash, Kind, Message, NodeId, RelPath, PROTOCOL_VERSION};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{debug, info, warn};

/// Most peers we remember from announcements (a flood of fake ids stops here).
const MAX_KNOWN_PEERS: usize = 1024;
/// How long a node whose handshake was refused is not dialled again.
const REFUSED_BACKOFF: Duration = Duration::from_secs(30);
/// How often the index is written when it changed.
const SAVE_INTERVAL: Duration = Duration::from_secs(2);
const INDEX_FILE: &str = "index";
/// How many received files may be made durable at once off the event loop
/// (each holds its temp file open meanwhile).
const MAX_DURABLE_JOBS: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    /// The synced directory (absolute).
    pub dir: PathBuf,
    /// Where the index lives (never synced).
    pub state_dir: PathBuf,
    pub listen_port: u16,
    pub broadcast_port: u16,
    pub broadcast_addr: Ipv4Addr,
    pub node_id: NodeId,
    pub announce_interval: Duration,
    /// Full rescan period (catches what the watcher missed).
    pub rescan_interval: Duration,
    /// The cluster key: with one, every connection is authenticated and
    /// encrypted, and only nodes with the same key are dialled.
    pub key: Option<ClusterKey>,
    pub counters: Arc<Counters>,
    /// `HOST:PORT`s to keep dialling (`--peer`), whatever discovery finds.
    pub static_peers: Vec<String>,
    /// Broadcast discovery: announce and listen (`--no-discovery`: neither).
    pub discovery: bool,
    /// Shutdown and status requests from the host process (none in the
    /// simulation).
    pub control: Control,
}

/// Counters a test or benchmark can read while the node runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Wire bytes of file content received (whole files and deltas).
    pub content_bytes_received: AtomicU64,
    pub files_received: AtomicU64,
    /// Changes applied without a transfer (deletes, renames, folders...).
    pub actions_applied: AtomicU64,
    pub connections: AtomicU64,
}

/// A change on the local disk, from the watcher (or the simulation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEvent {
    /// Look again at these paths and everything below them (`None`: the
    /// whole directory).
    Changed(Vec<Option<RelPath>>),
    /// `from` was renamed to `to`.
    Renamed { from: RelPath, to: RelPath },
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on TCP port {port}: {source} (is another dirsync running? choose another with --listen-port)")]
    Listen { port: u16, source: std::io::Error },
    #[error("cannot bind UDP broadcast port {port}: {source}")]
    Broadcast { port: u16, source: std::io::Error },
    #[error("state directory {path}: {source}")]
    StateDir { path: String, source: std::io::Error },
}

enum Event<N: Net> {
    Accepted(Conn<N>),
    Handshaken {
        conn: Link<N>,
        hello: PeerHello,
        origin: Origin,
    },
    /// A dial failed; `refused`: the peer refused us (or we it), so it is
    /// not dialled again for `REFUSED_BACKOFF`.
    DialFailed {
        origin: Origin,
        refused: bool,
    },
    /// Static target `i` is the address of this connected node.
    StaticConnected(usize, NodeId),
    /// Static target `i` is this node itself.
    StaticIsSelf(usize),
    Frame {
        conn: u64,
        peer: NodeId,
        msg: Message,
        bytes: usize,
    },
    Closed {
        conn: u64,
        peer: NodeId,
        reason: String,
    },
    Announce(SocketAddr, Announce),
    /// A received file was made durable (or could not be), off the loop.
    Durable {
        peer: NodeId,
        received: Received,
        result: Result<(), String>,
    },
    Local(LocalEvent),
    Tick,
    Status(StatusRequest),
}

/// Who started a connection.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The peer dialled us.
    Accepted,
    /// We dialled a peer discovery found.
    Discovered(NodeId),
    /// We dialled static target number `i`.
    Static(usize),
}

struct PeerConn {
    id: u64,
    dialer: NodeId,
    addr: SocketAddr,
    jobs: async_channel::Sender<Job>,
    traffic: Arc<Traffic>,
    /// What waits in `jobs` (see `limits::Queued`).
    queued: Arc<Queued>,
    /// Dropping it stops the reader and writer tasks.
    _stop: async_channel::Sender<()>,
}

/// Check the state directory can be created and written.
pub fn prepare_state_dir(dir: &std::path::Path) -> Result<(), NodeError> {
    let err = |source| NodeError::StateDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(err)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Run a node until the process ends. Returns early only on a start-up
/// error (ports, state directory).
pub async fn run<N: Net>(net: N, cfg: Config, local: async_channel::Receiver<LocalEvent>) -> Result<(), NodeError> {
    prepare_state_dir(&cfg.state_dir)?;
    let listener = net.listen(cfg.listen_port).await.map_err(|source| NodeError::Listen {
        port: cfg.listen_port,
        source,
    })?;
    let udp = if cfg.discovery {
        Some(Arc::new(net.bind_udp(cfg.broadcast_port).await.map_err(|source| {
            NodeError::Broadcast {
                port: cfg.broadcast_port,
                source,
            }
        })?))
    } else {
        None
    };

    let store = Store::new(cfg.dir.clone(), cfg.state_dir.clone());
    let cleaned = store.clean_temp_files();
    if cleaned > 0 {
        info!(count = cleaned, "removed temp files left by an earlier run");
    }
    let index_path = cfg.state_dir.join(INDEX_FILE);
    let (index, history_known) = load_index(&index_path);
    let device = load_device_id(&cfg.state_dir, cfg.node_id)?;
    let mut engine = Engine::new(cfg.node_id, index).with_device(device);
    if !history_known {
        engine = engine.with_unknown_history();
    }
    let muted = Arc::new(AtomicBool::new(false));
    let (events, inbox) = async_channel::bounded::<Event<N>>(256);
    let (wake_announcer, wake_rx) = async_channel::bounded::<()>(1);
    let (frame_credit, frames_in_flight) = async_channel::bounded::<()>(MAX_FRAMES_IN_FLIGHT);
    let mut node = Node {
        engine,
        muted: muted.clone(),
        retry: BTreeSet::new(),
        net: net.clone(),
        store,
        events: events.clone(),
        frame_credit,
        frames_in_flight,
        wake_announcer,
        peers: BTreeMap::new(),
        dialing: BTreeSet::new(),
        known: BTreeMap::new(),
        foreign: BTreeSet::new(),
        refused: BTreeMap::new(),
        slots: HandshakeSlots::default(),
        dial_slots: HandshakeSlots::default(),
        warns: WarnBudget::default(),
        at_capacity: false,
        incoming: BTreeMap::new(),
        durable_jobs: BTreeSet::new(),
        next_conn: 0,
        index_path,
        last_save: net.now(),
        last_rescan: net.now(),
        statics: StaticPeers::new(&cfg.static_peers, net.now()),
        ignore_seen: None,
        cfg: cfg.clone(),
    };
    node.load_ignore();
    node.rescan(LocalEvent::Changed(vec![None]));
    // The mass-delete guard may have stopped syncing before anything starts.
    node.run_commands();
    node.save_index();
    let (files, bytes) = node.engine.index().live_files();
    info!(node = %cfg.node_id, %device, dir = %cfg.dir.display(), listen_port = cfg.listen_port, broadcast_port = cfg.broadcast_port, files, bytes, "listening");
    match &cfg.key {
        Some(k) => info!(fingerprint = %k.fingerprint(), "cluster key on: connections are authenticated and encrypted"),
        None => warn!(
            dir = %cfg.dir.display(),
            "no cluster key (--key-file): any host on the network can read and change this directory"
        ),
    }

    let tx = events.clone();
    let n = net.clone();
    net.spawn(async move {
        loop {
            match n.accept(&listener).await {
                Ok(c) => {
                    if tx.send(Event::Accepted(c)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    n.sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    if let Some(udp) = udp {
        let to = SocketAddr::new(IpAddr::V4(cfg.broadcast_addr), cfg.broadcast_port);
        net.spawn(discovery::announce_loop(
            net.clone(),
            udp.clone(),
            Announce::new(cfg.node_id, cfg.listen_port).with_key(cfg.key.as_ref().map(ClusterKey::fingerprint)),
            to,
            cfg.announce_interval,
            wake_rx,
            muted,
        ));
        let tx = events.clone();
        net.spawn(discovery::listen_loop(net.clone(), udp, move |from, a| {
            tx.try_send(Event::Announce(from, a)).is_ok() || !tx.is_closed()
        }));
    }
    if let Some(requests) = cfg.control.status.clone() {
        let tx = events.clone();
        net.spawn(async move {
            while let Ok(req) = requests.recv().await {
                if tx.send(Event::Status(req)).await.is_err() {
                    return;
                }
            }
        });
    }
    let tx = events.clone();
    let n = net.clone();
    net.spawn(async move {
        loop {
            n.sleep(Duration::from_secs(1)).await;
            if tx.send(Event::Tick).await.is_err() {
                return;
            }
        }
    });
    let tx = events.clone();
    net.spawn(async move {
        while let Ok(ev) = local.recv().await {
            if tx.send(Event::Local(ev)).await.is_err() {
                return;
            }
        }
    });
    drop(events);
    node.dial_static_peers();

    let shutdown = cfg.control.shutdown.clone();
    loop {
        let next = async { Some(inbox.recv().await) };
        let stop = async {
            match &shutdown {
                Some(rx) if rx.recv().await.is_ok() => None,
                // No shutdown source (or it is gone): run on.
                _ => futures_lite::future::pending().await,
            }
        };
        match futures_lite::future::or(next, stop).await {
            Some(Ok(ev)) => node.handle(ev),
            Some(Err(_)) => break,
            None => {
                node.shut_down();
                break;
            }
        }
    }
    Ok(())
}

struct Node<N: Net> {
    net: N,
    cfg: Config,
    store: Store,
    engine: Engine,
    events: async_channel::Sender<Event<N>>,
    /// Readers put one token here per frame they hand to the loop, which
    /// takes it back when it handles the frame: at most
    /// `MAX_FRAMES_IN_FLIGHT` frames wait in memory (see there).
    frame_credit: async_channel::Sender<()>,
    frames_in_flight: async_channel::Receiver<()>,
    wake_announcer: async_channel::Sender<()>,
    peers: BTreeMap<NodeId, PeerConn>,
    dialing: BTreeSet<NodeId>,
    known: BTreeMap<NodeId, SocketAddr>,
    /// Nodes heard announcing another key (or none), logged once each.
    foreign: BTreeSet<NodeId>,
    /// Nodes whose handshake refused (or was refused), and when.
    refused: BTreeMap<NodeId, SystemTime>,
    /// Connections between accept and their hello.
    slots: HandshakeSlots,
    /// Our dials between connect and their hello: a budget of their own,
    /// so a flood of incoming connections does not stop us dialling.
    dial_slots: HandshakeSlots,
    /// Rate limit on refusal warnings (a connect loop must not flood the log).
    warns: WarnBudget,
    /// A cap was hit and logged; reset when there is room again.
    at_capacity: bool,
    incoming: BTreeMap<NodeId, Incoming>,
    /// Temp files of received files being made durable off the loop.
    durable_jobs: BTreeSet<PathBuf>,
    next_conn: u64,
    index_path: PathBuf,
    last_save: SystemTime,
    last_rescan: SystemTime,
    /// Set while not syncing (the mass-delete guard): no announcements.
    muted: Arc<AtomicBool>,
    /// Paths a scan could not observe, to look at again on the next tick.
    retry: BTreeSet<RelPath>,
    statics: StaticPeers,
    /// The content hash of the `.dirsyncignore` the rules came from.
    ignore_seen: Option<Option<Hash>>,
}

/// Of two connections with the same peer, keep the one dialed by the
/// smaller node id; both sides apply the same rule, so they keep the same
/// one. A new connection from the same dialer replaces the old (the old one
/// is dead but not yet noticed).
fn keep_new(existing_dialer: NodeId, new_dialer: NodeId) -> bool {
    new_dialer <= existing_dialer
}

impl<N: Net> Node<N> {
    fn me(&self) -> NodeId {
        self.cfg.node_id
    }

    fn now_ns(&self) -> i64 {
        system_time_ns(self.net.now())
    }

    fn handle(&mut self, ev: Event<N>) {
        match ev {
            Event::Accepted(_) if self.engine.suspended().is_some() => {} // dropped: not syncing
            Event::Accepted(conn) => match self.take_slot(false) {
                Some(slot) => self.spawn_handshake(conn, Origin::Accepted, slot),
                None => drop(conn),
            },
            Event::Handshaken { conn, hello, origin } => self.register(conn, hello, origin),
            Event::DialFailed {
                origin: Origin::Discovered(peer),
                refused,
            } => {
                self.dialing.remove(&peer);
                if refused {
                    if self.refused.len() >= MAX_KNOWN_PEERS {
                        self.refused.clear();
                    }
                    self.refused.insert(peer, self.net.now());
                }
            }
            Event::DialFailed {
                origin: Origin::Static(i), ..
            } => {
                let wait = self.statics.failed(i, self.net.now());
                debug!(
                    target = self.statics.addr(i).unwrap_or("?"),
                    ?wait,
                    "static peer unreachable; retrying later"
                );
            }
            Event::DialFailed {
                origin: Origin::Accepted, ..
            } => {}
            Event::StaticIsSelf(i) => {
                info!(
                    target = self.statics.addr(i).unwrap_or("?"),
                    "this static peer is this node itself; not dialling it again"
                );
                self.statics.forget(i);
            }
            Event::StaticConnected(i, node) => {
                self.statics.connected(i, node);
                if !self.peers.contains_key(&node) {
                    // Gone meanwhile: due again after the shortest wait.
                    self.statics.disconnected(node, self.net.now());
                }
            }
            Event::Status(req) => {
                let _ = req.reply.try_send(self.status());
            }
            Event::Frame { conn, peer, msg, bytes } => {
                let _ = self.frames_in_flight.try_recv();
                if self.peers.get(&peer).is_some_and(|p| p.id == conn) {
                    self.on_message(peer, msg, bytes);
                }
            }
            Event::Closed { conn, peer, reason } => {
                if self.peers.get(&peer).is_some_and(|p| p.id == conn) {
                    self.drop_peer(peer, &reason);
                }
            }
            Event::Announce(from, a) => self.on_announce(from, a),
            Event::Durable { peer, received, result } => self.install(peer, received, result),
            Event::Local(ev) => self.rescan(ev),
            Event::Tick => self.on_tick(),
        }
        self.run_commands();
        self.check_ignore_file();
    }

    fn on_announce(&mut self, from: SocketAddr, a: Announce) {
        if a.node == self.me() || self.engine.suspended().is_some() {
            return;
        }
        if a.version != PROTOCOL_VERSION {
            debug!(peer = %a.node, version = a.version, "ignoring announcement of another protocol version");
            return;
        }
        // Only nodes holding our key (or, without one, nodes without one)
        // are worth a connection: the others would be refused anyway.
        let ours = self.cfg.key.as_ref().map(ClusterKey::fingerprint);
        if a.key != ours {
            if self.foreign.len() >= MAX_KNOWN_PEERS {
                self.foreign.clear();
            }
            if self.foreign.insert(a.node) {
                let why = match (&ours, &a.key) {
                    (Some(_), None) => "it has no cluster key",
                    (None, Some(_)) => "it has a cluster key and this node has none",
                    _ => "it announces another cluster key",
                };
                // Made-up ids are free to send: the same budget as refusals.
                match self.warns.allow(self.net.now()) {
                    Some(_) => warn!(peer = %a.node, addr = %from, "not connecting: {why}"),
                    None => debug!(peer = %a.node, addr = %from, "not connecting: {why}"),
                }
            }
            return;
        }
        let addr = SocketAddr::new(from.ip(), a.port);
        if self.known.get(&a.node) != Some(&addr) {
            if self.known.len() >= MAX_KNOWN_PEERS && !self.known.contains_key(&a.node) {
                // A flood of made-up ids must not keep real newcomers out
                // (it used to): forget the nodes we are not connected to;
                // real ones are learnt again from their next announcement.
                let peers = &self.peers;
                self.known.retain(|id, _| peers.contains_key(id));
            }
            self.known.insert(a.node, addr);
            info!(peer = %a.node, %addr, "discovered");
            // Answer a newcomer at once so it need not wait an interval.
            let _ = self.wake_announcer.try_send(());
        }
        // One side dials: the smaller id. The other waits to be dialed.
        // A node that refused us (another key behind a replayed fingerprint,
        // a version we do not speak) is not dialled at every announcement.
        let backing_off = self
            .refused
            .get(&a.node)
            .is_some_and(|t| self.net.now().duration_since(*t).is_ok_and(|d| d < REFUSED_BACKOFF));
        if self.me() < a.node && !backing_off && !self.peers.contains_key(&a.node) && !self.dialing.contains(&a.node) {
            // Without a free slot the next announcement tries again.
            if let Some(slot) = self.take_slot(true) {
                self.dialing.insert(a.node);
                self.dial(Origin::Discovered(a.node), addr.to_string(), slot);
            }
        }
    }

    /// A handshake slot for a dial or an incoming connection, or `None`
    /// (logged once until a handshake succeeds again) when `MAX_HANDSHAKES`
    /// of them are already in their handshake.
    fn take_slot(&mut self, dial: bool) -> Option<Slot> {
        let slots = if dial { &self.dial_slots } else { &self.slots };
        let slot = slots.try_take(MAX_HANDSHAKES);
        if slot.is_none() && !self.at_capacity {
            self.at_capacity = true;
            let what = if dial { "not dialling" } else { "closing new connections" };
            warn!(
                limit = MAX_HANDSHAKES,
                "too many connections in their handshake; {what} until some finish"
            );
        }
        slot
    }

    /// Dial `target` (`HOST:PORT`, resolved first) and shake hands. A
    /// static target that resolves to the address of a peer connected
    /// already (it dialled us first) is not dialled: a second connection
    /// would only replace the first, interrupting its transfers.
    fn dial(&self, origin: Origin, target: String, slot: Slot) {
        let net = self.net.clone();
        let tx = self.events.clone();
        let me = self.me();
        let port = self.cfg.listen_port;
        let key = self.cfg.key.clone();
        let warns = self.warns.clone();
        let connected: BTreeMap<SocketAddr, NodeId> = self.peers.iter().map(|(id, p)| (p.addr, *id)).collect();
        self.net.spawn(async move {
            let addrs = match net.resolve(&target).await {
                Ok(a) if !a.is_empty() => a,
                Ok(_) => Vec::new(),
                Err(e) if matches!(origin, Origin::Static(_)) => {
                    warn!(%target, error = %e, "cannot resolve static peer; retrying later");
                    Vec::new()
                }
                Err(e) => {
                    debug!(%target, error = %e, "cannot resolve");
                    Vec::new()
                }
            };
            if let (Origin::Static(i), Some(node)) = (origin, addrs.iter().find_map(|a| connected.get(a))) {
                let _ = tx.send(Event::StaticConnected(i, *node)).await;
                return;
            }
            for addr in addrs {
                match net.connect(addr).await {
                    Ok(conn) => return Self::handshake_task(net, conn, me, port, key, tx, origin, slot, warns).await,
                    Err(e) => debug!(%target, %addr, error = %e, "dial failed"),
                }
            }
            let _ = tx.send(Event::DialFailed { origin, refused: false }).await;
        });
    }

    fn spawn_handshake(&self, conn: Conn<N>, origin: Origin, slot: Slot) {
        let net = self.net.clone();
        let tx = self.events.clone();
        let (me, port, key) = (self.me(), self.cfg.listen_port, self.cfg.key.clone());
        let warns = self.warns.clone();
        self.net
            .spawn(Self::handshake_task(net, conn, me, port, key, tx, origin, slot, warns));
    }

    /// The transport handshake (the key, if any), then the hellos, all
    /// within `HANDSHAKE_TIMEOUT`; the slot is held until then.
    #[allow(clippy::too_many_arguments)]
    async fn handshake_task(
        net: N,
        conn: Conn<N>,
        me: NodeId,
        port: u16,
        key: Option<ClusterKey>,
        tx: async_channel::Sender<Event<N>>,
        origin: Origin,
        slot: Slot,
        warns: WarnBudget,
    ) {
        let addr = conn.peer;
        let dialed = !matches!(origin, Origin::Accepted);
        let work = async {
            let mut link = secure::secure(conn, key.as_ref(), dialed).await?;
            let hello = handshake(&net, &mut link, me, port).await?;
            Ok::<_, conn::ConnError>((link, hello))
        };
        let timeout = async {
            net.sleep(conn::HANDSHAKE_TIMEOUT).await;
            Err(conn::ConnError::Timeout(conn::HANDSHAKE_TIMEOUT))
        };
        let result = futures_lite::future::or(work, timeout).await;
        drop(slot);
        let refused = match result {
            Ok((conn, hello)) => {
                let _ = tx.send(Event::Handshaken { conn, hello, origin }).await;
                return;
            }
            Err(conn::ConnError::Refused(r) | conn::ConnError::RefusedByPeer(r)) if r == conn::OWN_ID => {
                if let Origin::Static(i) = origin {
                    let _ = tx.send(Event::StaticIsSelf(i)).await;
                    return;
                }
                debug!(%addr, "a connection to ourselves");
                false
            }
            Err(e) if e.is_refusal() => {
                match warns.allow(net.now()) {
                    Some(0) => warn!(%addr, error = %e, "connection refused"),
                    Some(suppressed) => warn!(%addr, error = %e, suppressed, "connection refused"),
                    None => debug!(%addr, error = %e, "connection refused"),
                }
                true
            }
            Err(e) => {
                debug!(%addr, error = %e, "handshake failed");
                false
            }
        };
        let _ = tx.send(Event::DialFailed { origin, refused }).await;
    }

    fn register(&mut self, conn: Link<N>, hello: PeerHello, origin: Origin) {
        let peer = hello.node;
        self.dialing.remove(&peer);
        if self.slots.in_use() < MAX_HANDSHAKES && self.peers.len() < MAX_PEERS {
            self.at_capacity = false;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            if !self.at_capacity {
                self.at_capacity = true;
                warn!(limit = MAX_PEERS, %peer, addr = %conn.peer, "too many peers; closing this connection (and more, silently)");
            }
            return;
        }
        if let Origin::Static(i) = origin {
            // Its id is known only now: the rule below keeps one
            // connection when both sides list each other.
            self.statics.connected(i, peer);
        }
        let dialer = if matches!(origin, Origin::Accepted) { peer } else { self.me() };
        if let Some(existing) = self.peers.get(&peer) {
            if !keep_new(existing.dialer, dialer) {
                debug!(%peer, "closing a duplicate connection");
                return;
            }
            self.drop_peer(peer, "replaced by a newer connection");
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let addr = SocketAddr::new(conn.peer.ip(), hello.listen_port);
        let (jobs, jobs_rx) = async_channel::unbounded();
        let (stop, stop_rx) = async_channel::bounded::<()>(1);
        let traffic = Arc::new(Traffic::default());
        let queued = Arc::new(Queued::default());
        self.net.spawn(conn::run_writer(
            self.net.clone(),
            conn.writer,
            jobs_rx,
            self.store.clone(),
            peer,
            stop_rx.clone(),
            queued.clone(),
            traffic.clone(),
        ));
        let (tx, credit) = (self.events.clone(), self.frame_credit.clone());
        let mut reader = conn.reader;
        let net = self.net.clone();
        self.net.spawn(async move {
            loop {
                let read = async { Some(read_frame_or_idle(&net, &mut reader).await) };
                let stopped = async {
                    let _ = stop_rx.recv().await;
                    None
                };
                let reason = match futures_lite::future::or(read, stopped).await {
                    None => return,
                    Some(Ok((msg, bytes))) => {
                        if credit.send(()).await.is_err() {
                            return;
                        }
                        if tx
                            .send(Event::Frame {
                                conn: id,
                                peer,
                                msg,
                                bytes,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Some(Err(e)) => e.to_string(),
                };
                let _ = tx.send(Event::Closed { conn: id, peer, reason }).await;
                return;
            }
        });
        self.peers.insert(
            peer,
            PeerConn {
                id,
                dialer,
                addr,
                jobs,
                traffic,
                queued,
                _stop: stop,
            },
        );
        self.cfg.counters.connections.fetch_add(1, Ordering::Relaxed);
        info!(%peer, %addr, "connected");
        self.engine.handle_connected(peer);
    }

    fn drop_peer(&mut self, peer: NodeId, reason: &str) {
        if let Some(p) = self.peers.remove(&peer) {
            info!(%peer, addr = %p.addr, %reason, "disconnected");
            if let Some(inc) = self.incoming.remove(&peer) {
                self.discard_incoming(inc);
            }
            self.engine.handle_disconnected(peer);
            self.statics.disconnected(peer, self.net.now());
        }
    }

    /// Drop an incoming file, removing its temp file. Where the user moved
    /// the folder it was written in, the temp file is swept by name; where
    /// it was all that kept a folder whose deletion arrived meanwhile, that
    /// folder goes now (found by the simulation).
    fn discard_incoming(&mut self, inc: Incoming) {
        let path = inc.entry.path.clone();
        let lost = inc.temp_lost();
        drop(inc);
        self.temp_dropped(&path, lost);
    }

    /// A transfer's temp file for `path` was dropped: sweep it by name if
    /// the user had moved it (`lost`), and remove the folders it alone kept
    /// (their deletion arrived meanwhile).
    fn temp_dropped(&mut self, path: &RelPath, lost: bool) {
        if lost {
            self.sweep_temp_files();
        }
        self.remove_emptied_parents(path);
    }

    fn on_message(&mut self, peer: NodeId, msg: Message, bytes: usize) {
        match msg {
            Message::FileStart { entry, content } => {
                let expected = self.engine.accept_content(peer, &entry);
                if let Err(reason) = &expected {
                    debug!(%peer, %reason, "discarding content");
                    self.engine.content_refused(peer, &entry);
                }
                let inc = Incoming::start(&self.store, entry, content, expected, bytes);
                if let Some(old) = self.incoming.insert(peer, inc) {
                    self.close(peer, format!("new file started before {} ended", old.entry.path));
                }
            }
            Message::Chunk { data } => match self.incoming.get_mut(&peer) {
                Some(inc) => {
                    inc.chunk(&data, bytes);
                    if let Some(p) = self.peers.get(&peer) {
                        p.traffic.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
                    }
                }
                None => self.close(peer, "chunk outside a file".into()),
            },
            Message::FileEnd => match self.incoming.remove(&peer) {
                Some(inc) => self.finish_incoming(peer, inc),
                None => self.close(peer, "file end outside a file".into()),
            },
            Message::Ping => {}
            other => self.engine.handle_message(peer, other),
        }
    }

    fn finish_incoming(&mut self, peer: NodeId, inc: Incoming) {
        if !inc.wanted {
            return;
        }
        // A newer version (or deletion) arrived while this one was on its
        // way: it must not replace that (found by the simulation).
        if let Err(reason) = self.engine.accept_content(peer, &inc.entry) {
            debug!(%peer, %reason, "discarding superseded content");
            self.discard_incoming(inc);
            return;
        }
        let (entry, is_delta) = (inc.entry.clone(), inc.is_delta);
        let lost = inc.temp_lost();
        match inc.finish() {
            Ok(received) => self.make_durable(peer, received),
            Err(reason) => {
                self.temp_dropped(&entry.path, lost);
                self.rescan(LocalEvent::Changed(vec![Some(entry.path.clone())]));
                self.engine.handle_received(peer, entry, is_delta, Err(reason));
            }
        }
    }

    /// fsync a received file off the loop, so that many files are flushed
    /// at once (an initial sync of small files waited on each fsync in turn
    /// before); `install` follows on the loop. Beyond `MAX_DURABLE_JOBS` the
    /// loop does it itself, which holds the senders back.
    fn make_durable(&mut self, peer: NodeId, received: Received) {
        if self.durable_jobs.len() >= MAX_DURABLE_JOBS {
            let result = received.tmp.make_durable(&received.entry).map_err(|e| e.to_string());
            return self.install(peer, received, result);
        }
        self.durable_jobs.insert(received.tmp.path.clone());
        let (net, events) = (self.net.clone(), self.events.clone());
        self.net.spawn(async move {
            let (received, result) = net
                .spawn_blocking(move || {
                    let result = received.tmp.make_durable(&received.entry).map_err(|e| e.to_string());
                    (received, result)
                })
                .await;
            let _ = events.send(Event::Durable { peer, received, result }).await;
        });
    }

    /// Put a durable received file in place, unless it was superseded
    /// meanwhile, and tell the engine.
    fn install(&mut self, peer: NodeId, received: Received, durable: Result<(), String>) {
        let Received {
            entry,
            tmp,
            expected,
            wire_bytes,
            is_delta,
        } = received;
        self.durable_jobs.remove(&tmp.path);
        if let Err(reason) = self.engine.accept_content(peer, &entry) {
            debug!(%peer, %reason, "discarding superseded content");
            let lost = !tmp.discard();
            self.temp_dropped(&entry.path, lost);
            return;
        }
        let action = if self.engine.index().live(&entry.path).is_some() {
            "modify"
        } else {
            "create"
        };
        let lost = !tmp.path.exists();
        let result = durable
            .and_then(|()| self.store.install(tmp, &entry, expected.as_ref()).map_err(|e| e.to_string()))
            .map(|()| wire_bytes);
        if result.is_err() {
            self.temp_dropped(&entry.path, lost);
        }
        match &result {
            Ok(wire_bytes) => {
                info!(path = %entry.path, action, %peer, mode = if is_delta { "delta" } else { "full" }, wire_bytes, "applied");
                self.cfg.counters.content_bytes_received.fetch_add(*wire_bytes, Ordering::Relaxed);
                self.cfg.counters.files_received.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => self.rescan(LocalEvent::Changed(vec![Some(entry.path.clone())])),
        }
        self.engine.handle_received(peer, entry, is_delta, result);
    }

    /// Stop writing the incoming files the engine no longer wants (a newer
    /// version or deletion arrived meanwhile), removing their temp files.
    fn abandon_superseded(&mut self) {
        for (peer, inc) in self.incoming.iter_mut() {
            if inc.wanted {
                if let Err(reason) = self.engine.accept_content(*peer, &inc.entry) {
                    inc.abandon(reason);
                }
            }
        }
    }

    /// Remove the temp files no transfer in progress owns. One is abandoned
    /// where it cannot be removed by name: the user moved the folder it was
    /// being written in (found by the simulation).
    fn sweep_temp_files(&self) {
        let keep = self
            .incoming
            .values()
            .filter_map(|i| i.temp_path().map(std::path::Path::to_path_buf))
            .chain(self.durable_jobs.iter().cloned())
            .collect();
        let removed = self.store.remove_temp_files_except(&keep);
        if removed > 0 {
            info!(count = removed, "removed abandoned temp files");
        }
    }

    /// Remove the folders above `path`, innermost first, that the index
    /// holds as deleted and that are empty now. A folder whose deletion
    /// arrived while it still held something stays as the container of
    /// what it holds, and goes with the last of it (found by the
    /// simulation: such folders used to stay behind on some nodes).
    fn remove_emptied_parents(&self, path: &RelPath) {
        for dir in path.ancestors().into_iter().rev() {
            let deleted = self.engine.index().get(&dir).is_some_and(|e| e.deleted && e.kind == Kind::Dir);
            if !deleted || !self.store.remove_dir_if_empty(&dir) {
                return;
            }
            debug!(path = %dir, "removed an emptied folder whose deletion is recorded");
        }
    }

    fn close(&mut self, peer: NodeId, reason: String) {
        warn!(%peer, %reason, "protocol error; closing connection");
        self.drop_peer(peer, &reason);
    }

    /// Carry out the engine's commands until it has no more.
    fn run_commands(&mut self) {
        loop {
            let commands = self.engine.take_commands();
            if commands.is_empty() {
                return;
            }
            for cmd in commands {
                match cmd {
                    Command::Send { peer, msg } => self.queue(peer, Job::Send(msg)),
                    Command::SendContent { peer, entry, base } => self.queue(peer, Job::Content { entry, base }),
                    Command::RequestDelta { peer, want, base } => self.queue(peer, Job::RequestDelta { want, base }),
                    Command::Apply { peer, action } => self.apply(peer, action),
                    Command::Close { peer, reason } => self.close(peer, reason),
                    Command::Suspend { reason } => {
                        self.muted.store(true, Ordering::Relaxed);
                        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
                        for p in peers {
                            self.drop_peer(p, &format!("not syncing: {reason}"));
                        }
                    }
                    Command::Resume => {
                        self.muted.store(false, Ordering::Relaxed);
                        let _ = self.wake_announcer.try_send(());
                    }
                }
            }
        }
    }

    fn queue(&mut self, peer: NodeId, mut job: Job) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let sig = job.signature_bytes();
        if sig > 0 && p.queued.signature_bytes.load(Ordering::Acquire) + sig > MAX_QUEUED_SIGNATURE_BYTES {
            // Too many signatures waiting: answer with the whole file.
            if let Job::Content { base, entry } = &mut job {
                debug!(%peer, path = %entry.path, "signature queue full; sending the whole file");
                *base = None;
            }
        }
        if let Job::Content { entry, .. } = &job {
            p.traffic.queued(entry);
        }
        let jobs = p.queued.add(job.signature_bytes());
        let limit = self.engine.index().len() + QUEUE_SLACK;
        // Unbounded channel: only fails when the writer has stopped, and
        // then the reader reports the closed connection.
        let _ = p.jobs.try_send(job);
        if jobs > limit {
            self.close(peer, format!("{jobs} jobs queued: the peer asks faster than it reads"));
        }
    }

    fn apply(&mut self, peer: NodeId, action: Action) {
        if let Action::Delete { local, .. } = &action {
            if local.kind == Kind::Dir {
                // Transfers into the folder that its deletion superseded
                // must not keep it from being removed.
                self.abandon_superseded();
            }
        }
        let store = &self.store;
        let result = match &action {
            Action::MakeDir { entry } => store.make_dir(&entry.path),
            Action::Delete { local, .. } => store.delete(local),
            Action::SetMtime { entry, local } => store.set_mtime(entry, local),
            Action::Rename { from, entry, local, .. } => store.rename(from, entry, local.as_ref()),
            Action::Copy { from, entry, local } => store.copy(from, entry, local.as_ref()),
            Action::ConflictCopy { from, copy, .. } => store.copy(from, copy, None),
        };
        let path = action.entry().path.clone();
        let result = match result {
            // The peer deleted a folder that still holds something here (a
            // file it did not know, or one whose own deletion is still on
            // its way): the deletion is recorded all the same, and the
            // folder stays as the container of what it holds until that
            // goes too (see `remove_emptied_parents`).
            Err(StoreError::Io { source, .. })
                if matches!(&action, Action::Delete { local, .. } if local.kind == Kind::Dir)
                    && source.kind() == std::io::ErrorKind::DirectoryNotEmpty =>
            {
                debug!(%path, %peer, "folder not empty: its deletion is recorded, it stays for what it holds");
                Ok(())
            }
            other => other,
        };
        // The path this action emptied, whose parents may now go.
        let vacated = match &action {
            Action::Delete { .. } => Some(path.clone()),
            Action::Rename { from, .. } => Some(from.path.clone()),
            _ => None,
        }
        .filter(|_| result.is_ok());
        match &result {
            Ok(()) => {
                info!(%path, action = action.name(), %peer, wire_bytes = 0, "applied");
                self.cfg.counters.actions_applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(StoreError::Changed(_)) => {
                // The user changed it meanwhile: that change wins locally and
                // is announced like any other.
                self.rescan(LocalEvent::Changed(vec![Some(path.clone())]));
            }
            Err(_) => {}
        }
        self.engine.handle_action_done(peer, action, result.map_err(|e| e.to_string()));
        if let Some(vacated) = vacated {
            // A rename out of a folder whose deletion is recorded empties it
            // just as a delete does (found by the simulation).
            self.remove_emptied_parents(&vacated);
        }
    }

    /// Look at the disk again where `ev` says, and tell the engine.
    fn rescan(&mut self, ev: LocalEvent) {
        let index = self.engine.index();
        let (roots, found, failed, root_failed) = match ev {
            LocalEvent::Changed(mut roots) => {
                if roots.iter().any(Option::is_none) {
                    roots = vec![None];
                }
                roots.sort();
                roots.dedup();
                let mut found = Vec::new();
                let mut failed = Vec::new();
                let mut root_failed = false;
                for root in &roots {
                    let r = self.store.scan_checked(root.as_ref(), &|p| index.get(p).cloned());
                    found.extend(r.found);
                    failed.extend(r.failed);
                    root_failed |= r.root_failed;
                }
                (roots, found, failed, root_failed)
            }
            LocalEvent::Renamed { from, to } => {
                // A renamed file keeps its size and mtime: reuse the hash
                // the index has under its old name instead of reading it.
                let known = |p: &RelPath| -> Option<Entry> {
                    index.get(p).cloned().or_else(|| {
                        let suffix = p.as_str().strip_prefix(to.as_str())?;
                        index.get(&RelPath::new(format!("{from}{suffix}")).ok()?).cloned()
                    })
                };
                let mut r = self.store.scan_checked(Some(&to), &known);
                let r2 = self.store.scan_checked(Some(&from), &|p| index.get(p).cloned());
                r.found.extend(r2.found);
                r.failed.extend(r2.failed);
                (vec![Some(from), Some(to)], r.found, r.failed, false)
            }
        };
        // A folder the index holds as deleted that still holds something is
        // a container kept for its contents, not a folder made anew.
        let mut found = found;
        found.retain(|o| {
            o.kind != Kind::Dir
                || !index.get(&o.path).is_some_and(|e| e.deleted && e.kind == Kind::Dir)
                || !self.store.dir_has_entries(&o.path)
        });
        let now = self.now_ns();
        let dir = match self.store.dir_state() {
            DirState::Present if root_failed => DirState::Missing("cannot read it".into()),
            d => d,
        };
        // A file still being written (or unreadable) keeps its old entry and
        // is looked at again on the next tick.
        self.retry.extend(failed.iter().cloned());
        let scan = Scan {
            roots: roots.clone(),
            found,
            failed,
            dir,
        };
        self.engine.handle_scan(now, scan);
        if self.engine.suspended().is_some() {
            return;
        }
        for root in roots.iter().flatten() {
            self.remove_emptied_parents(root);
        }
    }

    fn on_tick(&mut self) {
        let now = self.net.now();
        let due = |last: SystemTime, every: Duration| now.duration_since(last).map_or(true, |d| d >= every);
        if self.engine.suspended().is_some() {
            // Not syncing: look every tick whether DIR is back.
            self.last_rescan = now;
            self.rescan(LocalEvent::Changed(vec![None]));
        } else if !self.retry.is_empty() {
            // Once: what fails again waits for its next watcher event or
            // the periodic rescan (an unreadable folder would otherwise be
            // read, and logged, every second).
            let paths = std::mem::take(&mut self.retry).into_iter().map(Some).collect();
            self.rescan(LocalEvent::Changed(paths));
            self.retry.clear();
        }
        if self.engine.suspended().is_none() && due(self.last_rescan, self.cfg.rescan_interval) {
            self.last_rescan = now;
            self.rescan(LocalEvent::Changed(vec![None]));
            self.sweep_temp_files();
        }
        if due(self.last_save, SAVE_INTERVAL) {
            self.last_save = now;
            self.save_index();
        }
        self.dial_static_peers();
        self.engine.share_digest();
    }

    /// Dial the static peers that are due.
    fn dial_static_peers(&mut self) {
        let connected = self.peers.keys().copied().collect();
        for (i, target) in self.statics.due(self.net.now(), &connected) {
            match self.take_slot(true) {
                Some(slot) => {
                    debug!(%target, "dialling static peer");
                    self.dial(Origin::Static(i), target, slot);
                }
                // No room for a handshake now: due again after a wait.
                None => {
                    self.statics.failed(i, self.net.now());
                }
            }
        }
    }

    fn save_index(&mut self) {
        if self.engine.take_dirty() {
            if let Err(e) = self.engine.index().save(&self.index_path) {
                warn!(error = %e, "cannot save the index");
                self.engine.note_error(format!("cannot save the index: {e}"));
            }
        }
    }

    /// Read `.dirsyncignore` from disk and give the engine its rules.
    fn load_ignore(&mut self) {
        let (rules, errors) = IgnoreRules::load(&self.cfg.dir);
        for e in errors {
            warn!(error = %e, "ignore rules");
        }
        if rules.source().is_some() {
            info!(patterns = rules.len(), "ignore rules loaded from {IGNORE_FILE}");
        }
        self.ignore_seen = Some(rules.source());
        self.engine.set_ignore(rules);
    }

    fn ignore_file_hash(&self) -> Option<Hash> {
        let path = RelPath::new(IGNORE_FILE).ok()?;
        self.engine.index().live(&path).filter(|e| e.kind == Kind::File).map(|e| e.hash)
    }

    /// When the index holds another `.dirsyncignore` than the rules came
    /// from (a local edit, or a peer's version applied), read it again, and
    /// rescan everything: paths no longer ignored are found and announced.
    fn check_ignore_file(&mut self) {
        if self.ignore_seen == Some(self.ignore_file_hash()) {
            return;
        }
        self.load_ignore();
        self.rescan(LocalEvent::Changed(vec![None]));
        self.run_commands();
    }

    /// Stop on a shutdown request: no more work is taken, incoming files
    /// are abandoned (their temp files removed, nothing partial visible),
    /// the index is saved and every connection closed.
    fn shut_down(&mut self) {
        let abandoned = self.incoming.len();
        // Dropping an `Incoming` removes its temp file.
        self.incoming.clear();
        self.sweep_temp_files();
        self.save_index();
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.drop_peer(p, "shutting down");
        }
        info!(abandoned_transfers = abandoned, "shut down");
    }

    /// What `dirsync status` shows.
    fn status(&mut self) -> Status {
        let pending = self.engine.pending_by_peer();
        let peers = self
            .engine
            .peers()
            .filter_map(|(id, synced)| {
                let p = self.peers.get(&id)?;
                let (receive_files, receive_bytes) = pending.get(&id).copied().unwrap_or_default();
                // Less what already arrived of the file on its way.
                let arrived = self.incoming.get(&id).filter(|i| i.wanted).map_or(0, |i| i.wire_bytes);
                let receive_bytes = receive_bytes.saturating_sub(arrived);
                let t = &p.traffic;
                Some(PeerStatus {
                    id,
                    addr: p.addr.to_string(),
                    synced,
                    digest: self.engine.peer_digest(id),
                    receive_files,
                    receive_bytes,
                    send_files: t.send_files.load(Ordering::Relaxed),
                    send_bytes: t.send_bytes.load(Ordering::Relaxed),
                    bytes_received: t.bytes_received.load(Ordering::Relaxed),
                    bytes_sent: t.bytes_sent.load(Ordering::Relaxed),
                })
            })
            .collect();
        let (files, bytes) = self.engine.tree_size();
        Status {
            node: self.me(),
            dir: self.cfg.dir.display().to_string(),
            listen_port: self.cfg.listen_port,
            files,
            bytes,
            digest: self.engine.tree_digest(),
            peers,
            unreachable: self
                .statics
                .unconnected(self.net.now(), &self.peers.keys().copied().collect())
                .into_iter()
                .map(|(addr, wait)| (addr, wait.as_secs()))
                .collect(),
            last_error: self.engine.last_error().map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_keep_the_same_connection() {
        let (a, b) = (NodeId(1), NodeId(2));
        // A holds the connection B dialed, then sees the one it dialed.
        assert!(keep_new(b, a));
        // B holds the connection A dialed, then sees its own: keeps A's.
        assert!(!keep_new(a, b));
        // A reconnect from the same dialer replaces the stale connection.
        assert!(keep_new(a, a));
    }
}

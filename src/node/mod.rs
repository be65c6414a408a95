//! The node: one event loop that owns the engine and carries out its
//! commands through the network (`Net`), the disk (`Store`) and the
//! connection tasks.
//!
//! - this file: `Config`, the start-up, the feeder tasks, the loop, the
//!   engine's commands, the tick and the shutdown;
//! - [`peers`]: announcements, dialling, handshakes, connections;
//! - [`incoming`]: received files, from the first frame to the install;
//! - [`pieces`]: files fetched in pieces, and the pieces we serve;
//! - [`disk`]: disk actions, rescans, the index file, the ignore file;
//! - [`status`]: the status report and the host process's channels.
//!
//! Must not: make sync decisions. Every `match` on an outcome that chooses
//! what happens next lives in the engine, with an exact-command test.

mod disk;
mod incoming;
mod peers;
mod pieces;
pub mod status;

pub use status::{CounterValues, Counters};

use crate::engine::{Command, Engine, Unsent};
use crate::fs::hashing::Hashed;
use crate::fs::state::{ensure_marker, load_device_id, load_index, prepare_state_dir, StateError};
use crate::fs::store::{system_time_ns, Store};
use crate::fs::temp::DiskFaults;
use crate::fs::trash::Trash;
use crate::fs::watcher::LocalEvent;
use crate::transport::conn::{Inbound, PeerHello};
use crate::transport::discovery;
use crate::transport::jobs::Job;
use crate::transport::key::ClusterKey;
use crate::transport::limits::MAX_FRAMES_IN_FLIGHT;
use crate::transport::net::{Net, Socket};
use crate::transport::rate::RateLimit;
use crate::transport::secure::Connection;
use crate::transport::static_peers::StaticPeers;
use crate::wire::{Announce, Entry, Message, NodeId};
use incoming::Arrivals;
use peers::{ConnId, Origin, Peers};
use status::{Control, StatusRequest};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Changes, or paths a scan looked at, after which freed memory is given
/// back to the system.
const LARGE_BATCH: u64 = 20_000;

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
    /// Failures to inject into disk writes (the simulation's full or
    /// read-only disk; never set in production).
    pub disk_faults: DiskFaults,
    /// Days to keep what a peer's change deleted or replaced (0: none).
    pub trash_days: u32,
    /// The bound on the whole trash.
    pub trash_max: crate::fs::trash::TrashMax,
    /// Permission bits are carried (off: `--no-perms`, the execute bit
    /// alone).
    pub perms: bool,
    /// `user.` extended attributes are carried (`--xattrs`).
    pub xattrs: bool,
    /// Files larger than this are hashed off the loop
    /// (`fs::hashing::INLINE_HASH_MAX`; the simulation lowers it).
    pub inline_hash_max: u64,
    /// File content this node sends, and takes in, at most, in bytes per
    /// second across all peers (`--max-send-rate`, `--max-recv-rate`).
    pub max_send_rate: Option<u64>,
    pub max_recv_rate: Option<u64>,
    /// Where the host process serves the dashboard (`--dashboard`;
    /// `None`: off), reported in the status.
    pub dashboard: Option<std::net::SocketAddr>,
    /// The size this node cuts its large files in for swarm transfers
    /// (`wire::pieces::PIECE_SIZE`; the simulation lowers it).
    pub piece_size: u64,
    /// Flip a byte of every piece this node sends: the simulation's lying
    /// peer (never set in production).
    pub corrupt_pieces: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on TCP port {port}: {source} (is another dirsync running? choose another with --listen-port)")]
    Listen { port: u16, source: std::io::Error },
    #[error("cannot bind UDP broadcast port {port}: {source}")]
    Broadcast { port: u16, source: std::io::Error },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the index database failed, stopping so that nothing is decided on a wrong index: {0}")]
    Index(String),
    #[error("cannot save the index, stopping (what this node synced would otherwise be lost at its next start): {0}")]
    Save(String),
}

/// Everything the loop reacts to.
enum Event<N: Net> {
    Accepted(Socket<N>),
    Handshaken {
        connection: Connection<N>,
        hello: PeerHello,
        origin: Origin,
    },
    /// A dial failed (`why`); `refused`: the peer refused us (or we it).
    DialFailed {
        origin: Origin,
        refused: bool,
        why: String,
    },
    /// Static target `i` is the address of this connected node.
    StaticConnected(usize, NodeId),
    /// Static target `i` is this node itself.
    StaticIsSelf(usize),
    /// From connection `conn_id`'s reader.
    Inbound {
        conn_id: ConnId,
        peer: NodeId,
        inbound: Inbound,
    },
    /// From connection `conn_id`'s writer: content it could not send as
    /// asked.
    Unsent {
        conn_id: ConnId,
        peer: NodeId,
        unsent: Unsent,
    },
    Announce(SocketAddr, Announce),
    /// A batch of received files was made durable (or not), off the loop.
    Durable(incoming::DurableBatch),
    /// Files of `files` frames were written off the loop.
    Written(incoming::Written),
    /// A large file was hashed (or not), off the loop.
    Hashed(Hashed),
    /// The piece map of a file was made (or not), off the loop.
    PieceMap(pieces::MadeMap),
    /// A peer's piece map, its pieces of zeros checked (`fs::pieces::checked_zeros`).
    ZerosChecked {
        peer: NodeId,
        map: Message,
    },
    Local(LocalEvent),
    Tick,
    Status(StatusRequest),
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
    /// Set while the engine has suspended syncing (the mass-delete guard):
    /// the announcer stays quiet.
    suspended: Arc<AtomicBool>,
    peers: Peers,
    arrivals: Arrivals,
    /// The index's sequence number when freed memory was last given back.
    trimmed_at: u64,
    /// A scan looked at `LARGE_BATCH` paths or more since then.
    large_scan: bool,
    /// The exclusion file's text when last read.
    exclusion_text: Vec<u8>,
    trash: Trash,
    /// A large file is being hashed off the loop (one at a time: blake3
    /// spreads each over all cores).
    hashing: bool,
    /// Piece maps of our files, made lately or being made (`pieces`).
    maps: pieces::Maps,
    /// Why the node must stop (the index cannot be saved): the loop ends
    /// and `run` returns it.
    stop: Option<NodeError>,
    /// The removal of the state directory, when it is DIR's marker, was
    /// reported (`disk::keep_state_dir`).
    state_gone_noted: bool,
    /// The bandwidth limits, shared by every connection.
    send_limit: Option<Arc<RateLimit>>,
    recv_limit: Option<Arc<RateLimit>>,
}

/// Run a node until the process ends. Returns early only on a start-up
/// error (ports, state directory).
pub async fn run<N: Net>(net: N, cfg: Config, local: async_channel::Receiver<LocalEvent>) -> Result<(), NodeError> {
    prepare_state_dir(&cfg.state_dir)?;
    let listener = net.listen(cfg.listen_port).await.map_err(|source| NodeError::Listen {
        port: cfg.listen_port,
        source,
    })?;
    let udp = match cfg.discovery {
        true => Some(Arc::new(net.bind_udp(cfg.broadcast_port).await.map_err(|source| {
            NodeError::Broadcast {
                port: cfg.broadcast_port,
                source,
            }
        })?)),
        false => None,
    };
    let (events, inbox) = async_channel::bounded::<Event<N>>(256);
    let (wake_announcer, wake_rx) = async_channel::bounded::<()>(1);
    let mut node = Node::start(net.clone(), cfg.clone(), events.clone(), wake_announcer)?;

    spawn_accept_loop(&net, listener, events.clone());
    if let Some(udp) = udp {
        let to = SocketAddr::new(IpAddr::V4(cfg.broadcast_addr), cfg.broadcast_port);
        let announce = Announce::new(cfg.node_id, cfg.listen_port).with_key(cfg.key.as_ref().map(ClusterKey::fingerprint));
        let suspended = node.suspended.clone();
        net.spawn(discovery::announce_loop(
            net.clone(),
            udp.clone(),
            announce,
            to,
            cfg.announce_interval,
            wake_rx,
            suspended,
        ));
        let tx = events.clone();
        net.spawn(discovery::listen_loop(net.clone(), udp, move |from, a| {
            tx.try_send(Event::Announce(from, a)).is_ok() || !tx.is_closed()
        }));
    }
    if let Some(requests) = cfg.control.status.clone() {
        forward(&net, requests, events.clone(), Event::Status);
    }
    forward(&net, local, events.clone(), Event::Local);
    let (n, tx) = (net.clone(), events.clone());
    net.spawn(async move {
        loop {
            n.sleep(Duration::from_secs(1)).await;
            if tx.send(Event::Tick).await.is_err() {
                return;
            }
        }
    });
    drop(events);
    node.dial_static_peers();
    node.run_loop(inbox, cfg.control.shutdown.clone()).await;
    if let Some(e) = node.stop.take() {
        return Err(e);
    }
    match node.engine.index().failure() {
        Some(f) => Err(NodeError::Index(f.to_string())),
        None => Ok(()),
    }
}

/// Accept connections on `listener` for as long as the loop runs.
fn spawn_accept_loop<N: Net>(net: &N, listener: N::Listener, events: async_channel::Sender<Event<N>>) {
    let n = net.clone();
    net.spawn(async move {
        loop {
            match n.accept(&listener).await {
                Ok(socket) => {
                    if events.send(Event::Accepted(socket)).await.is_err() {
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
}

/// Feed what arrives on `from` into the loop as events.
fn forward<N: Net, T: Send + 'static>(
    net: &N,
    from: async_channel::Receiver<T>,
    events: async_channel::Sender<Event<N>>,
    event: impl Fn(T) -> Event<N> + Send + 'static,
) {
    net.spawn(async move {
        while let Ok(item) = from.recv().await {
            if events.send(event(item)).await.is_err() {
                return;
            }
        }
    });
}

impl<N: Net> Node<N> {
    /// Load the state, look at the disk, and be ready to sync.
    fn start(
        net: N,
        cfg: Config,
        events: async_channel::Sender<Event<N>>,
        wake_announcer: async_channel::Sender<()>,
    ) -> Result<Self, NodeError> {
        let device = load_device_id(&cfg.state_dir, cfg.node_id)?;
        let clock = {
            let net = net.clone();
            Arc::new(move || system_time_ns(net.now()))
        };
        let trash = Trash::new(&cfg.dir, cfg.trash_days, cfg.trash_max, clock);
        let store = Store::new(cfg.dir.clone(), cfg.state_dir.clone(), device)
            .with_faults(cfg.disk_faults.clone())
            .with_trash(trash.clone())
            .with_inline_hash_max(cfg.inline_hash_max)
            .with_perms(cfg.perms)
            .with_xattrs(cfg.xattrs);
        let cleaned = store.clean_temp_files();
        if cleaned > 0 {
            info!(count = cleaned, "removed temp files left by an earlier run");
            cfg.counters.temp_files_removed.fetch_add(cleaned as u64, Ordering::Relaxed);
        }
        let loaded = load_index(&cfg.state_dir)?;
        let (index, history_known) = (loaded.index, loaded.history_known);
        if loaded.rebuilt {
            Counters::bump(&cfg.counters.index_rebuilt);
        }
        ensure_marker(&store.marker(), index.live_files().0 > 0)?;
        let rescan_every = i128::try_from(cfg.rescan_interval.as_nanos()).unwrap_or(i128::MAX);
        let mut engine = Engine::new(cfg.node_id, index)
            .with_device(device)
            .with_piece_size(cfg.piece_size)
            .with_timers(system_time_ns(net.now()), rescan_every);
        if !history_known {
            engine = engine.with_unknown_history();
        }
        let (frame_credit, frames_in_flight) = async_channel::bounded::<()>(MAX_FRAMES_IN_FLIGHT);
        let now = net.now();
        let mut node = Node {
            engine,
            suspended: Arc::new(AtomicBool::new(false)),
            hashing: false,
            maps: pieces::Maps::default(),
            stop: None,
            state_gone_noted: false,
            send_limit: cfg.max_send_rate.map(|r| Arc::new(RateLimit::new(r))),
            recv_limit: cfg.max_recv_rate.map(|r| Arc::new(RateLimit::new(r))),
            store,
            events,
            frame_credit,
            frames_in_flight,
            wake_announcer,
            peers: Peers::new(cfg.node_id, StaticPeers::new(&cfg.static_peers, now)),
            arrivals: Arrivals::new(cfg.counters.clone()),
            trimmed_at: 0,
            large_scan: false,
            exclusion_text: Vec::new(),
            trash,
            cfg,
            net,
        };
        node.prune_trash();
        node.load_ignore();
        node.load_exclusion()?;
        node.rescan(LocalEvent::Changed(vec![None]));
        // The mass-delete guard may have stopped syncing before anything starts.
        node.run_commands();
        node.save_index();
        let (files, bytes) = node.engine.index().live_files();
        let cfg = &node.cfg;
        info!(node = %cfg.node_id, %device, dir = %cfg.dir.display(), listen_port = cfg.listen_port, broadcast_port = cfg.broadcast_port, files, bytes, "listening");
        match &cfg.key {
            Some(k) => info!(fingerprint = %k.fingerprint(), "cluster key on: connections are authenticated and encrypted"),
            None => warn!(
                dir = %cfg.dir.display(),
                "no cluster key (--key-file): any host on the network can read and change this directory"
            ),
        }
        Ok(node)
    }

    /// Handle events until every feeder is gone or a shutdown is asked.
    async fn run_loop(&mut self, inbox: async_channel::Receiver<Event<N>>, shutdown: Option<async_channel::Receiver<()>>) {
        loop {
            if self.stop.is_some() {
                self.drop_all_peers("cannot save the index");
                return;
            }
            let next = async { Some(inbox.recv().await) };
            let stop = async {
                match &shutdown {
                    Some(rx) if rx.recv().await.is_ok() => None,
                    // No shutdown source (or it is gone): run on.
                    _ => futures_lite::future::pending().await,
                }
            };
            match futures_lite::future::or(next, stop).await {
                Some(Ok(ev)) => self.handle(ev),
                Some(Err(_)) => return,
                None => {
                    self.finish_durable_batch(&inbox).await;
                    return self.shut_down();
                }
            }
            if self.engine.index().failure().is_some() {
                self.drop_all_peers("the index database failed");
                return;
            }
        }
    }

    fn now_ns(&self) -> i128 {
        system_time_ns(self.net.now())
    }

    fn handle(&mut self, ev: Event<N>) {
        match ev {
            Event::Accepted(socket) => self.on_accepted(socket),
            Event::Handshaken { connection, hello, origin } => self.register(connection, hello, origin),
            Event::DialFailed { origin, refused, why } => self.on_dial_failed(origin, refused, why),
            Event::StaticIsSelf(i) => self.on_static_is_self(i),
            Event::StaticConnected(i, node) => self.on_static_connected(i, node),
            Event::Status(req) => {
                let _ = req.reply.try_send(self.status());
            }
            Event::Unsent { conn_id, peer, unsent } => {
                if self.peers.is_current(peer, conn_id) {
                    self.engine.handle_unsent(peer, unsent);
                }
            }
            Event::Inbound { conn_id, peer, inbound } => {
                let current = self.peers.is_current(peer, conn_id);
                match inbound {
                    Inbound::Frame { msg, bytes } => {
                        let _ = self.frames_in_flight.try_recv();
                        if current {
                            self.on_message(peer, msg, bytes);
                        }
                    }
                    Inbound::Closed { reason, malformed } if current => {
                        if malformed {
                            Counters::bump(&self.cfg.counters.protocol_errors);
                        }
                        self.drop_peer(peer, &reason);
                    }
                    Inbound::Closed { .. } => {}
                }
            }
            Event::Announce(from, a) => self.on_announce(from, a),
            Event::Durable(done) => self.on_durable(done),
            Event::Written(written) => self.on_written(written),
            Event::Hashed(hashed) => self.on_hashed(hashed),
            Event::PieceMap(made) => self.on_piece_map(made),
            Event::ZerosChecked { peer, map } => self.engine.handle_message(peer, map),
            Event::Local(ev) => self.rescan(ev),
            Event::Tick => self.on_tick(),
        }
        self.run_commands();
        let swept = self.arrivals.take_swept();
        if !swept.is_empty() {
            self.engine.handle_temp_removed(swept);
            self.run_commands();
        }
        let (received, bad) = self.engine.piece_counts();
        self.cfg.counters.pieces_received.store(received, Ordering::Relaxed);
        self.cfg.counters.bad_pieces.store(bad, Ordering::Relaxed);
    }

    fn on_message(&mut self, peer: NodeId, msg: Message, bytes: usize) {
        if let Message::Index { entries, .. } | Message::Update { entries } = &msg {
            let counter = &self.cfg.counters.index_entries_received;
            counter.fetch_add(entries.len() as u64, Ordering::Relaxed);
        }
        match msg {
            Message::FileStart { entry, content } => self.on_file_start(peer, entry, content, bytes),
            Message::Chunk { data } => self.on_chunk(peer, &data, bytes),
            Message::FileEnd => self.on_file_end(peer),
            Message::Files { .. } => self.on_files(peer, &msg, bytes),
            Message::Piece {
                path,
                hash,
                index,
                offset,
                data,
            } => self.on_piece(peer, &path, hash, index, offset, &data, bytes),
            Message::PieceMap { ref zeros, .. } if !zeros.is_empty() => self.check_zeros(peer, msg),
            other => {
                if let Some((jobs, signature_bytes)) = self.send_queue(peer) {
                    self.engine.handle_send_queue(peer, jobs, signature_bytes);
                }
                self.engine.handle_message(peer, other);
            }
        }
    }

    /// Carry out the engine's commands until it has no more.
    fn run_commands(&mut self) {
        loop {
            let commands = self.engine.take_commands();
            // Decisions made on a failed read of the index are not carried
            // out: the loop stops after this event.
            if commands.is_empty() || self.engine.index().failure().is_some() {
                return;
            }
            // What the disk actions among them put in place is durable in
            // the install journal first, as for received files
            // (`install_all`): a crash after one and before the index's
            // commit leaves a version the restart recognises, not a new
            // local one (found by the workload: a file touched by a peer,
            // then a crash, came back against a later delete).
            let installs: Vec<Entry> = commands
                .iter()
                .filter_map(|c| match c {
                    Command::Apply { action, .. } => action.installs().cloned(),
                    _ => None,
                })
                .collect();
            if let Err(e) = self.engine.index_mut().journal_installs(&installs) {
                warn!(error = %e, "could not record the changes about to be made: a crash before the next save may take them for local edits");
            }
            for cmd in commands {
                self.run_command(cmd);
            }
        }
    }

    fn run_command(&mut self, cmd: Command) {
        match cmd {
            Command::Send { peer, msg } => self.queue(peer, Job::Send(msg)),
            Command::SendContent { peer, entry, base } => {
                Counters::bump(&self.cfg.counters.files_sent);
                self.queue(peer, Job::Content { entry, base })
            }
            Command::RequestDelta { peer, want, base } => self.queue(peer, Job::RequestDelta { want, base }),
            Command::Apply { peer, action } => self.apply(peer, action),
            Command::Close { peer, reason } => self.close(peer, reason),
            Command::Abandon { peer, reason } => self.abandon(peer, reason),
            Command::Rescan { paths } => self.rescan(LocalEvent::Changed(paths.into_iter().map(Some).collect())),
            Command::RescanTree => self.rescan(LocalEvent::Changed(vec![None])),
            Command::SweepTemp => self.arrivals.sweep(&self.store),
            Command::SaveIndex => {
                self.save_index();
                self.release_free_memory();
            }
            Command::PruneTrash => self.prune_trash(),
            Command::RemoveEmptyDirs { dirs } => self.remove_empty_dirs(&dirs),
            Command::ReloadIgnore => {
                // Paths no longer ignored are found and announced.
                self.load_ignore();
                self.rescan(LocalEvent::Changed(vec![None]));
            }
            Command::Suspend { reason } => {
                self.suspended.store(true, Ordering::Relaxed);
                self.drop_all_peers(&format!("not syncing: {reason}"));
            }
            Command::Resume => {
                self.suspended.store(false, Ordering::Relaxed);
                let _ = self.wake_announcer.try_send(());
            }
            Command::StartPieces { entry, expected } => self.start_pieces(entry, expected),
            Command::SendPieceMap { peer, entry, piece_size } => self.send_piece_map(peer, entry, piece_size),
            Command::SendPiece {
                peer,
                entry,
                index,
                offset,
                len,
                from_temp,
            } => self.send_piece(peer, entry, index, offset, len, from_temp),
            Command::FinishPieces { path, peer } => self.finish_pieces(&path, peer),
            Command::EndPieces { path } => self.arrivals.end_pieces(&path, &self.store),
        }
    }

    fn on_tick(&mut self) {
        // Before the exclusion rules are read again: a removed state
        // directory is not a removed exclude file.
        self.keep_state_dir();
        self.dial_static_peers();
        self.check_exclusion();
        self.engine.handle_tick(self.now_ns());
    }

    /// After a large batch of work (an initial sync, a scan of a large
    /// tree), give the heap it freed back to the system: glibc keeps freed
    /// memory for reuse, and a node that took or looked at a million paths
    /// would stay at its peak size for good.
    fn release_free_memory(&mut self) {
        let seq = self.engine.index().seq();
        if seq.saturating_sub(self.trimmed_at) < LARGE_BATCH && !self.large_scan {
            return;
        }
        self.large_scan = false;
        self.trimmed_at = seq;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free pages of the heap to the
        // system; it has no preconditions and touches no live allocation.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn prune_trash(&mut self) {
        let removed = self.trash.prune();
        if removed > 0 {
            info!(
                count = removed,
                days = self.cfg.trash_days,
                "removed files older than --trash-days from the trash"
            );
        }
    }

    /// Wait for the batch of received files being made durable off the loop
    /// and put them in place (they are whole and verified): left to the
    /// process's exit, their temp files would stay behind. A batch being
    /// written is waited for and dropped, which removes its temp files.
    /// Other events are dropped, as the shutdown drops everything else.
    async fn finish_durable_batch(&mut self, inbox: &async_channel::Receiver<Event<N>>) {
        while self.arrivals.batch_under_way() {
            match inbox.recv().await {
                Ok(Event::Durable(done)) => self.finish_batch(done),
                Ok(Event::Written(_)) => self.arrivals.written_while_stopping(),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// Stop on a shutdown request: no more work is taken, incoming files
    /// are abandoned (their temp files removed, nothing partial visible),
    /// the index is saved and every connection closed.
    fn shut_down(&mut self) {
        let abandoned = self.arrivals.abandon_all(&self.store);
        self.keep_state_dir();
        self.close_index();
        self.drop_all_peers("shutting down");
        info!(abandoned_transfers = abandoned, "shut down");
    }
}

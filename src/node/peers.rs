//! The node's peers, the IO side: the connected peers' records (their
//! writer's queue, traffic, the handle that stops their tasks), the
//! handshake slots, the refusal warning budget and the static peers.
//!
//! Owns: `Peers` and the work around it: announcements, dialling, the
//! handshake task, registering a connection (spawning its reader and
//! writer) and dropping it, and queueing work for a peer's writer, each as
//! `transport::peering` decides. Must not: decide whom to dial, which
//! connection to keep, or the caps and backoffs (`Peering` does), nor
//! anything about sync (the engine does).

use super::status::UnreachablePeer;
use super::{Counters, Event, Node};
use crate::engine::Unsent;
use crate::transport::conn::{self, handshake, ConnError, Inbound, PeerHello, Traffic};
use crate::transport::jobs::{self, Job, JobSender};
use crate::transport::key::ClusterKey;
use crate::transport::limits::{HandshakeSlots, Queued, Slot, WarnBudget, MAX_HANDSHAKES, MAX_PEERS};
use crate::transport::net::{Net, Socket};
use crate::transport::peering::{Peering, Register};
use crate::transport::secure::{self, Connection};
use crate::transport::static_peers::StaticPeers;
use crate::wire::{common_version, Announce, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{debug, info, warn};

pub(super) use crate::transport::peering::ConnId;

/// Who started a connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin {
    /// The peer dialled us.
    Accepted,
    /// We dialled a peer discovery found.
    Discovered(NodeId),
    /// We dialled static target number `i`.
    Static(usize),
}

impl Origin {
    fn dialed(self) -> bool {
        !matches!(self, Origin::Accepted)
    }
}

/// A connected peer, as the node holds it: its connection's lanes, tasks and
/// counters (the engine's `Peer` is what the sync knows of it).
pub(super) struct PeerLink {
    pub conn_id: ConnId,
    pub addr: SocketAddr,
    /// The peer may skip zeros in the pieces it sends (`FEATURE_SPARSE_PIECES`).
    pub sparse_pieces: bool,
    jobs: JobSender,
    pub traffic: Arc<Traffic>,
    /// What waits in `jobs` (see `limits::Queued`).
    queued: Arc<Queued>,
    /// Dropping it stops the reader and writer tasks.
    _stop: async_channel::Sender<()>,
}

/// Everything the node knows about other nodes.
pub(super) struct Peers {
    /// The connected peers, one connection each: the same nodes as
    /// `peering` counts as connected, with the same `ConnId`s.
    connected: BTreeMap<NodeId, PeerLink>,
    /// Every decision: whom to dial, which connection to keep, the caps.
    peering: Peering,
    /// Connections accepted and not yet past their hello.
    accept_slots: HandshakeSlots,
    /// Our dials between connect and their hello: a budget of their own,
    /// so a flood of incoming connections does not stop us dialling.
    dial_slots: HandshakeSlots,
    /// Rate limit on refusal warnings (a connect loop must not flood the log).
    warns: WarnBudget,
    statics: StaticPeers,
}

impl Peers {
    /// The peers of node `me`.
    pub fn new(me: NodeId, statics: StaticPeers) -> Peers {
        Peers {
            connected: BTreeMap::new(),
            peering: Peering::new(me),
            accept_slots: HandshakeSlots::default(),
            dial_slots: HandshakeSlots::default(),
            warns: WarnBudget::default(),
            statics,
        }
    }

    pub fn get(&self, peer: NodeId) -> Option<&PeerLink> {
        self.connected.get(&peer)
    }

    /// True if `conn_id` is the current connection with `peer`.
    pub fn is_current(&self, peer: NodeId, conn_id: ConnId) -> bool {
        self.connected.get(&peer).is_some_and(|p| p.conn_id == conn_id)
    }

    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.connected.keys().copied().collect()
    }

    /// Static peers (`--peer`) not connected now.
    pub fn unreachable(&self, now: SystemTime) -> Vec<UnreachablePeer> {
        self.statics
            .unconnected(now, &self.ids())
            .into_iter()
            .map(|u| UnreachablePeer {
                addr: u.addr,
                next_try_secs: u.wait.as_secs(),
                last_failure: u.last_failure,
            })
            .collect()
    }

    /// A handshake slot for a connection we accept or dial, or `None`
    /// (logged once until a handshake succeeds again) when `MAX_HANDSHAKES`
    /// of them are already in their handshake.
    fn take_slot(&mut self, origin: Origin) -> Option<Slot> {
        let (slots, what) = if origin.dialed() {
            (&self.dial_slots, "not dialling")
        } else {
            (&self.accept_slots, "closing new connections")
        };
        let slot = slots.try_take(MAX_HANDSHAKES);
        if slot.is_none() && self.peering.handshake_slots_full() {
            warn!(
                limit = MAX_HANDSHAKES,
                "too many connections in their handshake; {what} until some finish"
            );
        }
        slot
    }
}

/// What a handshake task needs, cloned from the node.
struct Handshake<N: Net> {
    net: N,
    me: NodeId,
    device: NodeId,
    listen_port: u16,
    key: Option<ClusterKey>,
    events: async_channel::Sender<Event<N>>,
    warns: WarnBudget,
    counters: Arc<Counters>,
}

impl<N: Net> Handshake<N> {
    /// The transport handshake (the key, if any), then the hellos, all
    /// within `HANDSHAKE_TIMEOUT`; the slot is held until then.
    async fn run(self, socket: Socket<N>, origin: Origin, slot: Slot) {
        let addr = socket.peer;
        let work = async {
            let mut connection = secure::establish(socket, self.key.as_ref(), origin.dialed()).await?;
            let hello = handshake(&self.net, &mut connection, self.me, self.device, self.listen_port).await?;
            Ok::<_, ConnError>((connection, hello))
        };
        let timeout = async {
            self.net.sleep(conn::HANDSHAKE_TIMEOUT).await;
            Err(ConnError::Timeout(conn::HANDSHAKE_TIMEOUT))
        };
        let result = futures_lite::future::or(work, timeout).await;
        drop(slot);
        let (refused, why) = match result {
            Ok((connection, hello)) => {
                let _ = self.events.send(Event::Handshaken { connection, hello, origin }).await;
                return;
            }
            Err(ConnError::Refused(r) | ConnError::RefusedByPeer(r)) if r == conn::OWN_ID => {
                if let Origin::Static(i) = origin {
                    let _ = self.events.send(Event::StaticIsSelf(i)).await;
                    return;
                }
                debug!(%addr, "a connection to ourselves");
                (false, "a connection to this node itself".to_string())
            }
            Err(e) if e.is_refusal() => {
                Counters::bump(&self.counters.handshakes_refused);
                match self.warns.allow(self.net.now()) {
                    Some(0) => warn!(%addr, error = %e, "connection refused"),
                    Some(suppressed) => warn!(%addr, error = %e, suppressed, "connection refused"),
                    None => debug!(%addr, error = %e, "connection refused"),
                }
                (true, format!("{addr}: {e}"))
            }
            Err(e) => {
                debug!(%addr, error = %e, "handshake failed");
                (false, format!("{addr}: handshake failed: {e}"))
            }
        };
        let _ = self.events.send(Event::DialFailed { origin, refused, why }).await;
    }
}

impl<N: Net> Node<N> {
    fn handshake(&self) -> Handshake<N> {
        Handshake {
            net: self.net.clone(),
            me: self.cfg.node_id,
            device: self.engine.device(),
            listen_port: self.cfg.listen_port,
            key: self.cfg.key.clone(),
            events: self.events.clone(),
            warns: self.peers.warns.clone(),
            counters: self.cfg.counters.clone(),
        }
    }

    /// A peer dialled us: shake hands, if there is a slot for it.
    pub(super) fn on_accepted(&mut self, socket: Socket<N>) {
        if self.engine.suspended().is_some() {
            return; // dropped: not syncing
        }
        match self.peers.take_slot(Origin::Accepted) {
            Some(slot) => self.net.spawn(self.handshake().run(socket, Origin::Accepted, slot)),
            None => Counters::bump(&self.cfg.counters.over_capacity),
        }
    }

    pub(super) fn on_announce(&mut self, from: SocketAddr, a: Announce) {
        if a.node == self.cfg.node_id || self.engine.suspended().is_some() {
            return;
        }
        if common_version(a.version, a.newest).is_none() {
            debug!(peer = %a.node, version = a.version, "ignoring announcement of another protocol version");
            return;
        }
        // Only nodes holding our key (or, without one, nodes without one)
        // are worth a connection: the others would be refused anyway.
        let ours = self.cfg.key.as_ref().map(ClusterKey::fingerprint);
        if a.key != ours {
            self.foreign_announcement(from, &a, ours.is_some());
            return;
        }
        let addr = SocketAddr::new(from.ip(), a.port);
        let outcome = self.peers.peering.on_announcement(a.node, addr, self.net.now());
        if outcome.news {
            info!(peer = %a.node, %addr, "discovered");
            Counters::bump(&self.cfg.counters.discovered);
            // Answer a newcomer at once so it need not wait an interval.
            let _ = self.wake_announcer.try_send(());
        }
        if outcome.dial {
            let origin = Origin::Discovered(a.node);
            // Without a free slot the next announcement tries again.
            if let Some(slot) = self.peers.take_slot(origin) {
                self.peers.peering.dialing(a.node);
                self.dial(origin, addr.to_string(), slot);
            }
        }
    }

    /// An announcement with another key than ours (or none): logged once
    /// per node, within the warning budget.
    fn foreign_announcement(&mut self, from: SocketAddr, a: &Announce, keyed: bool) {
        Counters::bump(&self.cfg.counters.foreign_announcements);
        if !self.peers.peering.foreign(a.node) {
            return;
        }
        Counters::bump(&self.cfg.counters.foreign_nodes);
        let why = match (keyed, &a.key) {
            (true, None) => "it has no cluster key",
            (false, Some(_)) => "it has a cluster key and this node has none",
            _ => "it announces another cluster key",
        };
        // Where it listens, not the UDP port its announcement came from.
        let addr = SocketAddr::new(from.ip(), a.port);
        // Made-up ids are free to send: the same budget as refusals.
        match self.peers.warns.allow(self.net.now()) {
            Some(_) => warn!(peer = %a.node, %addr, "not connecting: {why}"),
            None => debug!(peer = %a.node, %addr, "not connecting: {why}"),
        }
    }

    /// Dial the static peers that are due.
    pub(super) fn dial_static_peers(&mut self) {
        let connected = self.peers.ids();
        for (i, target) in self.peers.statics.due(self.net.now(), &connected) {
            match self.peers.take_slot(Origin::Static(i)) {
                Some(slot) => {
                    debug!(%target, "dialling static peer");
                    self.dial(Origin::Static(i), target, slot);
                }
                // No room for a handshake now: due again after a wait.
                None => {
                    let why = "no room for another handshake now".to_string();
                    self.peers.statics.failed(i, self.net.now(), why);
                }
            }
        }
    }

    /// Dial `target` (`HOST:PORT`, resolved first) and shake hands. A
    /// static target that resolves to the address of a peer connected
    /// already (it dialled us first) is not dialled: a second connection
    /// would only replace the first, interrupting its transfers.
    fn dial(&self, origin: Origin, target: String, slot: Slot) {
        let net = self.net.clone();
        let handshake = self.handshake();
        let connected: BTreeMap<SocketAddr, NodeId> = self.peers.connected.iter().map(|(id, p)| (p.addr, *id)).collect();
        self.net.spawn(async move {
            let mut failures = Vec::new();
            let addrs = match net.resolve(&target).await {
                Ok(a) => a,
                Err(e) if matches!(origin, Origin::Static(_)) => {
                    warn!(%target, error = %e, "cannot resolve static peer; retrying later");
                    failures.push(format!("cannot resolve: {e}"));
                    Vec::new()
                }
                Err(e) => {
                    debug!(%target, error = %e, "cannot resolve");
                    failures.push(format!("cannot resolve: {e}"));
                    Vec::new()
                }
            };
            if let (Origin::Static(i), Some(node)) = (origin, addrs.iter().find_map(|a| connected.get(a))) {
                let _ = handshake.events.send(Event::StaticConnected(i, *node)).await;
                return;
            }
            for addr in addrs {
                match net.connect(addr).await {
                    Ok(socket) => return handshake.run(socket, origin, slot).await,
                    Err(e) => {
                        debug!(%target, %addr, error = %e, "dial failed");
                        failures.push(format!("{addr}: {e}"));
                    }
                }
            }
            let why = match failures.is_empty() {
                true => "resolves to no address".to_string(),
                false => failures.join("; "),
            };
            let _ = handshake
                .events
                .send(Event::DialFailed {
                    origin,
                    refused: false,
                    why,
                })
                .await;
        });
    }

    /// A dial or handshake failed; `refused`: the peer refused us (or we
    /// it), so it is not dialled again for `peering::REFUSED_BACKOFF`.
    pub(super) fn on_dial_failed(&mut self, origin: Origin, refused: bool, why: String) {
        let now = self.net.now();
        match origin {
            Origin::Discovered(peer) => self.peers.peering.dial_failed(peer, refused, now),
            Origin::Static(i) => {
                debug!(target = self.peers.statics.addr(i).unwrap_or("?"), %why, "static peer unreachable; retrying later");
                self.peers.statics.failed(i, now, why);
            }
            Origin::Accepted => {}
        }
    }

    /// Static target `i` turned out to be this node itself.
    pub(super) fn on_static_is_self(&mut self, i: usize) {
        let target = self.peers.statics.addr(i).unwrap_or("?");
        info!(target, "this static peer is this node itself; not dialling it again");
        Counters::bump(&self.cfg.counters.static_self);
        self.peers.statics.forget(i);
    }

    /// Static target `i` is the address of `node`, connected already.
    pub(super) fn on_static_connected(&mut self, i: usize, node: NodeId) {
        self.peers.statics.connected(i, node);
        if !self.peers.connected.contains_key(&node) {
            // Gone meanwhile: due again after the shortest wait.
            self.peers.statics.disconnected(node, self.net.now());
        }
    }

    /// A handshake succeeded: keep the connection if `Peering` says so
    /// (one per peer, at most `MAX_PEERS`), start its reader and writer,
    /// tell the engine.
    pub(super) fn register(&mut self, connection: Connection<N>, hello: PeerHello, origin: Origin) {
        let peer = hello.node;
        let dialer = if origin.dialed() { self.cfg.node_id } else { peer };
        let decision = self.peers.peering.handshaken(peer, dialer, self.peers.accept_slots.in_use());
        if let (Origin::Static(i), Register::Keep(_) | Register::Replace(_) | Register::Duplicate) = (origin, decision) {
            // Its id is known only now: `Peering` keeps one connection
            // when both sides list each other.
            self.peers.statics.connected(i, peer);
        }
        let conn_id = match decision {
            Register::Keep(conn_id) => conn_id,
            Register::Replace(conn_id) => {
                self.drop_peer(peer, "replaced by a newer connection");
                conn_id
            }
            Register::Duplicate => {
                debug!(%peer, "closing a duplicate connection");
                return;
            }
            Register::OverCapacity { warn } => {
                Counters::bump(&self.cfg.counters.over_capacity);
                if warn {
                    warn!(limit = MAX_PEERS, %peer, addr = %connection.peer, "too many peers; closing this connection (and more, silently)");
                }
                return;
            }
        };
        let addr = SocketAddr::new(connection.peer.ip(), hello.listen_port);
        let record = self.start_connection(connection, peer, conn_id, addr, &hello);
        self.peers.connected.insert(peer, record);
        self.cfg.counters.connections.fetch_add(1, Ordering::Relaxed);
        info!(%peer, %addr, "connected");
        self.engine.handle_connected(peer, hello.device, hello.version);
    }

    /// Spawn a registered connection's writer and reader.
    fn start_connection(
        &mut self,
        connection: Connection<N>,
        peer: NodeId,
        conn_id: ConnId,
        addr: SocketAddr,
        hello: &PeerHello,
    ) -> PeerLink {
        let (jobs, jobs_rx) = jobs::lanes();
        let (stop, stop_rx) = async_channel::bounded::<()>(1);
        let traffic = Arc::new(Traffic::default());
        let queued = Arc::new(Queued::default());
        self.net.spawn(conn::run_writer(
            self.net.clone(),
            connection.writer,
            jobs_rx,
            self.store.clone(),
            peer,
            stop_rx.clone(),
            queued.clone(),
            traffic.clone(),
            conn::Sending {
                limit: self.send_limit.clone(),
                corrupt_pieces: self.cfg.corrupt_pieces,
                sparse_pieces: hello.sparse_pieces,
                version: hello.version,
            },
            self.events.clone(),
            move |unsent: Unsent| Event::Unsent { conn_id, peer, unsent },
        ));
        self.net.spawn(conn::run_reader(
            self.net.clone(),
            connection.reader,
            stop_rx,
            self.frame_credit.clone(),
            self.events.clone(),
            move |inbound: Inbound| Event::Inbound { conn_id, peer, inbound },
            self.recv_limit.clone(),
        ));
        PeerLink {
            conn_id,
            addr,
            sparse_pieces: hello.sparse_pieces,
            jobs,
            traffic,
            queued,
            _stop: stop,
        }
    }

    /// Forget the connection with `peer` (its tasks stop), and drop the
    /// file it was sending.
    pub(super) fn drop_peer(&mut self, peer: NodeId, reason: &str) {
        if let Some(p) = self.peers.connected.remove(&peer) {
            self.peers.peering.disconnected(peer, p.conn_id);
            info!(%peer, addr = %p.addr, %reason, "disconnected");
            self.arrivals.drop_from(peer, &self.store);
            self.engine.handle_disconnected(peer);
            self.peers.statics.disconnected(peer, self.net.now());
        }
    }

    /// Every connection, for `reason`.
    pub(super) fn drop_all_peers(&mut self, reason: &str) {
        for peer in self.peers.ids() {
            self.drop_peer(peer, reason);
        }
    }

    pub(super) fn close(&mut self, peer: NodeId, reason: String) {
        warn!(%peer, %reason, "protocol error; closing connection");
        Counters::bump(&self.cfg.counters.protocol_errors);
        self.drop_peer(peer, &reason);
    }

    /// Queue `job` for `peer`'s writer (the engine decided it: whole or
    /// delta, and whether the peer is past what it may have waiting).
    pub(super) fn queue(&mut self, peer: NodeId, job: Job) {
        let Some(p) = self.peers.connected.get(&peer) else {
            return;
        };
        if let Job::Content { entry, .. } = &job {
            p.traffic.queued(entry);
        }
        p.queued.add(job.signature_bytes());
        // Unbounded lanes: only fails when the writer has stopped, and
        // then the reader reports the closed connection.
        let _ = p.jobs.send(job);
    }

    /// What waits in `peer`'s writer now: jobs, and signature bytes.
    pub(super) fn send_queue(&self, peer: NodeId) -> Option<(usize, usize)> {
        let p = self.peers.connected.get(&peer)?;
        Some((
            p.queued.jobs.load(Ordering::Acquire),
            p.queued.signature_bytes.load(Ordering::Acquire),
        ))
    }
}

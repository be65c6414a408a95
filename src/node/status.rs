//! What the node tells its host process: the status report (`dirsync
//! status`, the progress display) and the channels the host reaches the
//! node loop through.
//!
//! Owns: the `Status` report and how the node fills it in. Must not: change
//! anything in the node (a status request is read-only).

use super::Node;
use crate::transport::net::Net;
use crate::wire::{Hash, NodeId};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Declares `Counters` (atomics the node bumps as things happen, shared
/// with the host process and the simulation) and `CounterValues` (one
/// reading of them, in `dirsync status --json`), from one list.
macro_rules! counters {
    ($($(#[doc = $doc:expr])* $name:ident,)*) => {
        /// What happened on this node since it started, counted: tests and
        /// benchmarks assert on these, not on log text.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// One reading of `Counters`.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct CounterValues {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Counters {
            pub fn values(&self) -> CounterValues {
                CounterValues {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Index entries received from peers (`Index` parts and `Update`s).
    index_entries_received,
    /// Files whose content a look at the disk read to hash it (a file
    /// whose size and mtime match the index is not read).
    files_hashed,
    /// Wire bytes of file content received (whole files and deltas).
    content_bytes_received,
    /// Files received and installed.
    files_received,
    /// Of those, the ones that travelled as a delta.
    deltas_received,
    /// Changes applied without a transfer (deletes, renames, folders...).
    actions_applied,
    /// Of those, renames.
    renames_applied,
    /// Disk actions and received files that failed.
    failures,
    /// Connections registered after a successful handshake.
    connections,
    /// Connections closed for a malformed frame or a protocol violation.
    protocol_errors,
    /// Handshakes refused by either side (another key, another version).
    handshakes_refused,
    /// Connections closed because the handshake slots or the peer cap
    /// were full.
    over_capacity,
    /// Nodes learnt (or learnt at a new address) from announcements.
    discovered,
    /// Announcements heard from nodes of another cluster (another key, or
    /// a key on one side only): not taken up.
    foreign_announcements,
    /// Of those, the nodes heard for the first time (each is logged once,
    /// `not connecting: ...`).
    foreign_nodes,
    /// Static peers (`--peer`) found to be this node itself.
    static_self,
    /// Temp files removed: left by an earlier run, or abandoned.
    temp_files_removed,
    /// The index was unreadable at start and rebuilt from a scan.
    index_rebuilt,
    /// Pieces of files fetched in pieces, received and verified.
    pieces_received,
    /// Pieces (and piece maps) refused: they failed their hash.
    bad_pieces,
    /// Pieces this node was asked for and sent (or tried to).
    pieces_sent,
    /// Whole files and deltas this node was asked for and sent (or tried
    /// to).
    files_sent,
    /// The state directory was found removed (or moved) under the running
    /// node and made again, index included.
    state_restored,
    /// Looks at the disk told to the engine (watcher events, rescans, and
    /// while not syncing, the look each second for DIR and its marker).
    looks,
}

impl Counters {
    /// Count one more of `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Inputs the node takes from its host process, besides local changes.
/// Both are optional: the simulation runs without them.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// A message here asks the node to shut down cleanly.
    pub shutdown: Option<async_channel::Receiver<()>>,
    /// Requests for the node's status.
    pub status: Option<async_channel::Receiver<StatusRequest>>,
}

/// A static peer (`--peer`) not connected now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnreachablePeer {
    /// `HOST:PORT` as given.
    pub addr: String,
    /// Seconds until the next attempt (0 while one runs).
    pub next_try_secs: u64,
    /// Why the last attempt failed, if one did.
    pub last_failure: Option<String>,
}

/// A request for the node's status; the answer goes to `reply`.
#[derive(Debug)]
pub struct StatusRequest {
    pub reply: async_channel::Sender<Status>,
}

impl StatusRequest {
    /// A request, and where its answer arrives.
    pub fn new() -> (StatusRequest, async_channel::Receiver<Status>) {
        let (reply, rx) = async_channel::bounded(1);
        (StatusRequest { reply }, rx)
    }
}

/// What a running node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: NodeId,
    pub dir: String,
    pub listen_port: u16,
    /// Live files in the index and their total size.
    pub files: u64,
    pub bytes: u64,
    /// This node's tree digest (see `Engine::tree_digest`).
    pub digest: Hash,
    pub peers: Vec<PeerStatus>,
    /// Static peers (`--peer`) not connected now.
    #[serde(default)]
    pub unreachable: Vec<UnreachablePeer>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Why the node is not syncing (the mass-delete guard), if it is not.
    #[serde(default)]
    pub suspended: Option<String>,
    /// Paths whose peer version could not be taken yet, tried again with
    /// backoff (the first `MAX_RETRYING_SHOWN`), and how many in all.
    #[serde(default)]
    pub retrying: Vec<RetryingPath>,
    #[serde(default)]
    pub retrying_total: u64,
    /// Bytes kept in the trash (`dirsync trash` lists them).
    #[serde(default)]
    pub trash_bytes: u64,
    /// Large files new or changed here, being hashed before they are
    /// announced (`fs::hashing`).
    #[serde(default)]
    pub hashing: u64,
    /// Paths the peers hold that this host's exclusion rules
    /// (`STATE_DIR/exclude`) keep from it.
    #[serde(default)]
    pub excluded: u64,
    /// Paths here that cannot be read (the first `MAX_RETRYING_SHOWN`),
    /// and how many in all: unknown, not synced, and no deletion made here
    /// travels while one may hold what moved away.
    #[serde(default)]
    pub unreadable: Vec<String>,
    #[serde(default)]
    pub unreadable_total: u64,
    #[serde(default)]
    pub counters: CounterValues,
    /// The dashboard's address, if the host serves one (its token is in
    /// the state directory).
    #[serde(default)]
    pub dashboard: Option<String>,
}

/// A status with nothing in it, for tests of what shows it.
#[cfg(test)]
pub(crate) fn quiet_status(peers: Vec<PeerStatus>) -> Status {
    Status {
        node: NodeId(1),
        dir: "/d".into(),
        listen_port: 6000,
        files: 0,
        bytes: 0,
        digest: Hash::ZERO,
        peers,
        unreachable: vec![],
        last_error: None,
        suspended: None,
        retrying: vec![],
        retrying_total: 0,
        trash_bytes: 0,
        hashing: 0,
        excluded: 0,
        unreadable: vec![],
        unreadable_total: 0,
        counters: Default::default(),
        dashboard: None,
    }
}

/// Most failed paths `dirsync status` lists.
pub const MAX_RETRYING_SHOWN: usize = 20;

/// A path whose peer version could not be taken yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryingPath {
    pub path: String,
    /// The last failure.
    pub error: String,
    pub attempts: u32,
}

/// One connected peer, as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: NodeId,
    pub addr: String,
    /// The initial sync with this peer is complete.
    pub synced: bool,
    /// The tree digest the peer last told us.
    pub digest: Option<Hash>,
    /// Our tree digest as the peer compares it: over what the protocol
    /// version spoken with it holds (equal to `digest`: in sync).
    #[serde(default)]
    pub ours: Hash,
    /// The protocol version spoken with it.
    #[serde(default)]
    pub protocol: u32,
    /// Files and bytes still to receive from it, and to send to it.
    pub receive_files: u64,
    pub receive_bytes: u64,
    pub send_files: u64,
    pub send_bytes: u64,
    /// Content bytes (on the wire) received from and sent to it so far.
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl<N: Net> Node<N> {
    /// What `dirsync status` shows.
    pub(super) fn status(&mut self) -> Status {
        let pending = self.engine.pending_by_peer();
        let peers = self
            .engine
            .peers()
            .filter_map(|(id, synced)| {
                let p = self.peers.get(id)?;
                let (receive_files, receive_bytes) = pending.get(&id).copied().unwrap_or_default();
                // Less what already arrived of the file on its way.
                let receive_bytes = receive_bytes.saturating_sub(self.arrivals.arrived_from(id));
                let t = &p.traffic;
                Some(PeerStatus {
                    id,
                    addr: p.addr.to_string(),
                    synced,
                    digest: self.engine.peer_digest(id),
                    ours: self.engine.tree_digest(),
                    protocol: self.engine.version_of(id),
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
        let retrying = self.engine.retrying();
        Status {
            node: self.cfg.node_id,
            dir: self.cfg.dir.display().to_string(),
            listen_port: self.cfg.listen_port,
            files,
            bytes,
            digest: self.engine.tree_digest(),
            peers,
            unreachable: self.peers.unreachable(self.net.now()),
            last_error: self.engine.last_error().map(str::to_string),
            suspended: self.engine.suspended().map(str::to_string),
            retrying_total: retrying.len() as u64,
            trash_bytes: self.trash.size(),
            hashing: self.store.files_hashing() as u64,
            excluded: self.engine.excluded_paths(),
            unreadable: self
                .engine
                .unreadable()
                .take(MAX_RETRYING_SHOWN)
                .map(|p| p.as_str().to_string())
                .collect(),
            unreadable_total: self.engine.unreadable().count() as u64,
            dashboard: self.cfg.dashboard.map(|a| format!("http://{a}/")),
            retrying: retrying
                .into_iter()
                .take(MAX_RETRYING_SHOWN)
                .map(|r| RetryingPath {
                    path: r.path.as_str().to_string(),
                    error: r.error,
                    attempts: r.attempts,
                })
                .collect(),
            counters: self.cfg.counters.values(),
        }
    }
}

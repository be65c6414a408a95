//! The sync state machine: decides what to ask for, what to send and what
//! to change on disk. No IO, no clock, no randomness: every input arrives
//! through a `handle_*` call (with `now` where time matters), and every
//! decision leaves as a `Command` from `take_commands`.
//!
//! The model is announce-then-pull, as in Syncthing. On connect each side
//! sends its whole index; afterwards every change (local, or applied from a
//! peer) goes to every peer as an `Update`. A node compares each entry it
//! hears with its own index and, where the peer's version wins, changes its
//! disk: deletions and directories at once, renames and copies from local
//! content when a file with the same hash is here, and otherwise by asking
//! one peer that has the version for it (`Want`, batched, or `WantDelta`
//! with a signature when an older copy is here to diff against). Asking one
//! source per path means a node joining a cluster of three receives each
//! file once, not three times.
//!
//! Every entry carries a version vector (`crate::wire::version`). `index::beats`
//! still picks the winner; the vectors tell whether the two versions were
//! concurrent, and then: the losing bytes of a live file are kept as a
//! conflict copy (`crate::engine::conflict`) before they are replaced, and an edit
//! beats a delete that did not see it (the rules: docs/CONFLICTS.md).

mod back_pressure;
pub mod conflict;
mod descent;
mod exchange;
mod exclude;
mod folders;
pub mod ignore;
pub mod index;
mod local;
mod receive;
mod remote;
mod repair;
mod requests;
mod safety;
mod swarm;
mod timers;
mod types;
mod unsent;

#[cfg(test)]
mod tests;

pub use exclude::Exclusion;
pub use types::{
    mode_on_disk, Action, ActionError, Command, DirState, Extent, Known, Look, Observed, PieceArrival, PieceFrame, Receive, Scan, Stat,
    Transfer, Unsent, DEFAULT_FOLDER_MODE,
};

use crate::wire::pieces::PIECE_SIZE;
use crate::wire::{Entry, Hash, Kind, Message, NodeId, RelPath, MAX_ENTRIES, PROTOCOL_VERSION};
use ignore::{IgnoreRules, IGNORE_FILE};
use index::{beats, Index};
use requests::{Inflight, Requests};
use std::collections::{BTreeMap, BTreeSet};

/// Files smaller than this are always asked for whole: a delta cannot pay
/// back the round trip and the signature.
pub const DELTA_MIN_SIZE: u64 = 64 * 1024;

/// A version this node wants, and the peers that announced it.
#[derive(Debug, Clone)]
struct Need {
    entry: Entry,
    sources: BTreeSet<NodeId>,
    /// The peer that announced it first, and when (the engine's clock). A
    /// version other receivers lack too is asked of a peer that passes it
    /// on before this one (which every receiver would ask otherwise), and
    /// one that another receiver is first to fetch waits a while for that
    /// receiver to offer it.
    first: NodeId,
    since: i128,
    /// A delta against our copy failed once: ask for the whole file.
    whole: bool,
}

/// How far a peer's index has come to us: every change of its index
/// `identity` up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexPoint {
    identity: u64,
    seq: u64,
}

#[derive(Debug, Default)]
struct Peer {
    /// The peer's directory id: what we remember its index under.
    device: NodeId,
    /// The protocol version spoken with it (`wire::common_version`): how
    /// its wants name versions (`Message::spoken_in`), and part of the
    /// index exchange's identity.
    version: u32,
    /// What waits in the peer's writer (`back_pressure.rs`).
    send_queue: back_pressure::SendQueue,
    /// The index the peer announced (`IndexHead`), until its last part.
    head: Option<IndexPoint>,
    /// The peer's index has arrived (as far as `taken_up_to` says).
    index_done: bool,
    /// How far the peer's index has come to us, once `index_done`.
    taken_up_to: Option<IndexPoint>,
    /// The peer's live updates heard before its index was in, taken after
    /// it (`remote.rs`, `EARLY_UPDATES`).
    early_updates: Vec<Vec<Entry>>,
    /// The peer has more parts of its index for us, to ask for once what
    /// we still have to fetch has shrunk (`IndexMore`).
    more_index: bool,
    /// Our index, being sent to the peer part by part.
    sending: Option<exchange::Sending>,
    /// The initial sync with this peer is complete (and was logged).
    synced: bool,
    /// Files and bytes received from this peer since it connected.
    files_received: u64,
    bytes_received: u64,
    /// The tree digest the peer last told us.
    digest: Option<Hash>,
    /// The tree digest we last told the peer.
    /// The tree digest and index sequence number we last told the peer.
    digest_sent: Option<(Hash, u64)>,
    /// The file the peer is streaming now (between `FileStart` and
    /// `FileEnd`).
    streaming: Option<Streaming>,
    /// Repairing a difference of digests (see `repair.rs`).
    descent: descent::DescentSchedule,
}

/// A file a peer is streaming.
#[derive(Debug)]
struct Streaming {
    entry: Entry,
    /// We asked for it and still want it: its outcome is reported.
    wanted: bool,
}

pub struct Engine {
    me: NodeId,
    /// This directory's persistent identity, the key of its counters in
    /// version vectors.
    device: NodeId,
    /// The index was missing or rebuilt: paths the first whole scan finds
    /// get an empty vector (history unknown) rather than a new local change.
    unknown_history: bool,
    /// Why syncing stopped (the mass-delete guard), while it is stopped.
    suspended: Option<String>,
    index: Index,
    peers: BTreeMap<NodeId, Peer>,
    /// What this node wants from its peers and whom it asks (`remote.rs`,
    /// `requests.rs`): the needs, what is in flight, and the needs waiting to
    /// be asked.
    wants: Wants,
    /// What is to be tried or looked at again (`repair.rs`, `local.rs`): failed
    /// versions, folders to remove, paths that appeared lately, deletions held
    /// for the marker check, unreadable paths.
    upkeep: Upkeep,
    /// The latest time an input brought (`handle_tick`, `handle_scan`).
    clock: i128,
    commands: Vec<Command>,
    /// The paths this node keeps to itself (`ignore.rs`) and does not sync here
    /// (`exclude.rs`).
    filters: Filters,
    /// The last failure, for `dirsync status`.
    last_error: Option<String>,
    /// Files fetched in pieces (`swarm.rs`) and what their pieces taught us of
    /// each peer.
    swarming: Swarming,
    /// The periodic jobs: rescan, save, prune (`timers.rs`).
    timers: timers::Timers,
}

/// What this node wants from its peers and whom it asks (`remote.rs`,
/// `requests.rs`): the needs, what is in flight, and the needs waiting to be
/// asked.
#[derive(Debug)]
struct Wants {
    needs: BTreeMap<RelPath, Need>,
    inflight: Requests,
    /// Needs that may not be asked for yet: a superset of the needs not in
    /// flight, so that `schedule` looks only at these and not at every need
    /// (it runs after every message; a full pass made an initial sync of
    /// n files cost O(n²)). In an order of their own on every node
    /// (`schedule_order`), so that receivers of one batch ask for its files
    /// in different orders and have files to give each other.
    to_schedule: BTreeSet<(u64, RelPath)>,
    /// Needs waiting for a source's window to open (`requests.rs`), under
    /// each of their connected sources: taken, in order, as far as the
    /// window that opened has room, not at every `schedule` (which runs
    /// after every message).
    waiting_for_window: BTreeMap<NodeId, BTreeSet<(u64, RelPath)>>,
    /// Needs `schedule` looked at, since start (tests check it stays in
    /// proportion to what is asked).
    #[cfg(test)]
    looked_at: u64,
    /// Needs with no source connected: looked at again when a peer
    /// connects (or announces them).
    without_source: BTreeSet<(u64, RelPath)>,
    /// Some need waits for another receiver to offer it (`first_elsewhere`):
    /// the next tick schedules again.
    deferred: bool,
}

/// What is to be tried or looked at again (`repair.rs`, `local.rs`): failed
/// versions, folders to remove, paths that appeared lately, deletions held for
/// the marker check, unreadable paths.
#[derive(Debug, Default)]
struct Upkeep {
    /// Versions we failed to take, tried again with backoff.
    retries: BTreeMap<RelPath, repair::Retry>,
    /// Emptied folders whose removal failed, and when to try again.
    dirs_to_remove: BTreeMap<RelPath, i128>,
    /// Paths that appeared here lately, looked at again once a moment
    /// later: a file written and renamed away at once must not stay live
    /// in the index.
    appeared_lately: BTreeMap<RelPath, i128>,
    /// Paths a look found gone, with when: a deletion travels only once a
    /// later look, a moment after, still finds DIR with its marker
    /// (`local.rs`, the mass-delete guard made all-or-nothing).
    held_deletes: BTreeMap<RelPath, i128>,
    /// Paths a look could not read (permission, I/O error): unknown, not
    /// gone. While one of them may hold what moved away (a folder, or a
    /// path the index does not know), no deletion travels (issue 24,
    /// case 3), and `dirsync status` lists them.
    /// With when to look at each again (backoff, 1 s doubling to 60 s)
    /// and how many looks failed.
    unreadable: BTreeMap<RelPath, (i128, u32)>,
    /// What the parts of the look at the whole tree under way could not
    /// read so far: the set above, once the look is over.
    tree_failed: BTreeSet<RelPath>,
    /// What the parts of that look left to be hashed off the loop so far.
    tree_hashing: BTreeSet<RelPath>,
    /// Received files a crash kept out of the index (install journal rows
    /// only) that the last look at the whole tree found gone while it left
    /// files to be hashed: one of those may be where they moved, which
    /// shows when its hash comes (see `Engine::journaled_moves`).
    journaled_gone: Vec<Entry>,
}

/// The paths this node keeps to itself (`ignore.rs`) and does not sync here
/// (`exclude.rs`).
#[derive(Debug)]
struct Filters {
    /// Paths this node keeps to itself (`.dirsyncignore`).
    ignore: IgnoreRules,
    /// The content hash of the `.dirsyncignore` the index held when last
    /// looked at (`None`: none), to notice when it changes.
    ignore_file_seen: Option<Hash>,
    /// Paths this host does not sync (`exclude.rs`).
    exclude: IgnoreRules,
    /// How many live paths of the index `exclude` names.
    excluded_live: u64,
    /// Paths excluded until the rules changed, synced again: their
    /// forgotten entries, until a look at the whole tree found them here
    /// or not (`exclude.rs`).
    synced_again: BTreeMap<RelPath, exclude::Rejoining>,
    /// `.dirsyncignore` as a path, made once: it is looked up after every
    /// input.
    ignore_path: Option<RelPath>,
}

/// Files fetched in pieces (`swarm.rs`) and what their pieces taught us of each
/// peer.
#[derive(Debug)]
struct Swarming {
    /// Files being fetched in pieces (`swarm.rs`).
    swarms: BTreeMap<RelPath, swarm::Swarm>,
    /// Pieces (or piece maps) each peer sent that failed their hash.
    bad_pieces_from: BTreeMap<NodeId, u32>,
    /// The piece size this node cuts its files in (`wire::pieces`).
    piece_size: u64,
    /// Pieces received and verified, and refused, since the start.
    pieces_received: u64,
    bad_pieces: u64,
}

impl Engine {
    pub fn new(me: NodeId, index: Index) -> Self {
        let mut engine = Engine {
            me,
            device: me,
            unknown_history: false,
            suspended: None,
            index,
            peers: BTreeMap::new(),
            clock: 0,
            commands: Vec::new(),
            last_error: None,
            timers: timers::Timers::off(),

            wants: Wants {
                needs: BTreeMap::new(),
                inflight: Requests::default(),
                to_schedule: BTreeSet::new(),
                waiting_for_window: BTreeMap::new(),
                deferred: false,
                #[cfg(test)]
                looked_at: 0,
                without_source: BTreeSet::new(),
            },
            upkeep: Upkeep::default(),
            filters: Filters {
                ignore: IgnoreRules::default(),
                ignore_file_seen: None,
                exclude: IgnoreRules::default(),
                excluded_live: 0,
                synced_again: BTreeMap::new(),
                ignore_path: RelPath::new(IGNORE_FILE).ok(),
            },
            swarming: Swarming {
                swarms: BTreeMap::new(),
                bad_pieces_from: BTreeMap::new(),
                piece_size: PIECE_SIZE,
                pieces_received: 0,
                bad_pieces: 0,
            },
        };
        engine.filters.ignore_file_seen = engine.ignore_file_hash();
        engine
    }

    /// Use `device` (persistent, see `fs::state::load_device_id`) in version
    /// vectors instead of the run's node id.
    pub fn with_device(mut self, device: NodeId) -> Self {
        self.device = device;
        self
    }

    /// Cut files in pieces of `bytes` (the simulation's files are small).
    pub fn with_piece_size(mut self, bytes: u64) -> Self {
        self.swarming.piece_size = bytes;
        self
    }

    /// Start the periodic jobs at `now` (ns): the whole tree is looked at
    /// again every `rescan_every` (ns).
    pub fn with_timers(mut self, now: i128, rescan_every: i128) -> Self {
        self.timers = timers::Timers::new(now, rescan_every);
        self
    }

    /// The index was missing or unreadable: what the first whole scan finds
    /// has an unknown history (an empty vector), so a peer's newer delete
    /// still wins over it and it never counts as a concurrent edit.
    pub fn with_unknown_history(mut self) -> Self {
        self.unknown_history = true;
        self
    }

    /// This directory's persistent identity.
    pub fn device(&self) -> NodeId {
        self.device
    }

    #[cfg(test)]
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Why syncing is stopped, if it is (the mass-delete guard).
    pub fn suspended(&self) -> Option<&str> {
        self.suspended.as_deref()
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The index, to commit it (the node's job: it is IO).
    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    /// The commands decided since the last call, in order. (Also where
    /// what every input may have changed is looked at once: the ignore
    /// file, and whether to ask a peer for more of its index.)
    pub fn take_commands(&mut self) -> Vec<Command> {
        self.ask_for_more_index();
        let ignore_file = self.ignore_file_hash();
        if ignore_file != self.filters.ignore_file_seen {
            self.filters.ignore_file_seen = ignore_file;
            // Once per version of the file (an unreadable one is not read
            // again after every input), and only if the rules came from
            // other text (our own scan of the file the rules were read from
            // changes nothing).
            if ignore_file != self.filters.ignore.source() {
                self.commands.push(Command::ReloadIgnore);
            }
        }
        coalesce_updates(std::mem::take(&mut self.commands))
    }

    /// The content hash of the `.dirsyncignore` the index holds.
    fn ignore_file_hash(&self) -> Option<Hash> {
        let path = self.filters.ignore_path.as_ref()?;
        self.index.live(path).filter(|e| e.kind == Kind::File).map(|e| e.hash)
    }

    /// Connected peers and whether the initial sync with each is done.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, bool)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.synced))
    }

    /// Paths still wanted from peers (including those being received).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.wants.needs.len() + self.upkeep.retries.keys().filter(|p| !self.wants.needs.contains_key(*p)).count()
    }

    /// What is still to receive, per peer: files and bytes. A path counts
    /// for the peer it is asked of, or else the first connected source.
    pub fn pending_by_peer(&self) -> BTreeMap<NodeId, (u64, u64)> {
        let mut out: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        for (path, need) in &self.wants.needs {
            let peer = self
                .wants
                .inflight
                .get(path)
                .map(|i| i.peer)
                .or_else(|| need.sources.iter().copied().find(|p| self.peers.contains_key(p)));
            if let Some(peer) = peer {
                let slot = out.entry(peer).or_default();
                slot.0 += 1;
                slot.1 += need.entry.size;
            }
        }
        // Failed versions waiting for their next try count too.
        for retry in self
            .upkeep
            .retries
            .iter()
            .filter(|(p, _)| !self.wants.needs.contains_key(*p))
            .map(|(_, r)| r)
        {
            let slot = out.entry(retry.peer).or_default();
            slot.0 += 1;
            slot.1 += retry.entry.size;
        }
        out
    }

    /// Use `rules` from now on. Paths they ignore are neither announced,
    /// nor changed for a peer, nor served; what the index holds of them
    /// stays as it is.
    pub fn set_ignore(&mut self, rules: IgnoreRules) {
        let changed = rules.source() != self.filters.ignore.source();
        self.index.set_ignore(rules.clone());
        self.filters.ignore = rules;
        if changed {
            self.ask_again_for_indexes();
        }
    }

    fn ignored(&self, path: &RelPath, kind: Kind) -> bool {
        self.filters.ignore.is_ignored(path, kind == Kind::Dir)
    }

    /// The tree digest: the root of a hash tree over folders
    /// (`index::DirSum`), equal on two nodes exactly when they hold the same
    /// synchronized tree (ignored paths left out), kept up to date by every
    /// change in O(depth).
    pub fn tree_digest(&self) -> Hash {
        self.index.dir_sum("").digest()
    }

    /// The protocol version spoken with `peer` (the newest, if unknown).
    pub fn version_of(&self, peer: NodeId) -> u32 {
        self.peers.get(&peer).map_or(PROTOCOL_VERSION, |p| p.version)
    }

    /// Tell every peer our tree digest if it changed since we last told
    /// it. The node calls this at a steady pace (once a second), which is
    /// the rate limit.
    pub(super) fn share_digest(&mut self) {
        let digest = self.tree_digest();
        let seq = self.index.seq();
        let stale: Vec<(NodeId, Hash)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.digest_sent != Some((digest, seq)))
            .map(|(id, _)| (*id, digest))
            .collect();
        for (peer, digest) in stale {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.digest_sent = Some((digest, seq));
            }
            self.send(peer, Message::TreeDigest { digest, seq });
        }
    }

    /// Live files in the synchronized tree (ignored paths left out) and
    /// their total size.
    pub fn tree_size(&self) -> (u64, u64) {
        let root = self.index.dir_sum("");
        (root.files, root.bytes)
    }

    /// The tree digest `peer` last told us.
    pub fn peer_digest(&self, peer: NodeId) -> Option<Hash> {
        self.peers.get(&peer).and_then(|p| p.digest)
    }

    /// The last failure seen (for `dirsync status`).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Record a failure the node met outside the engine.
    pub fn note_error(&mut self, what: String) {
        self.last_error = Some(what);
    }

    // ----- internals -----------------------------------------------------

    /// `path` may be asked for (again) at the next `schedule`, at its
    /// place in this node's own order of paths (`schedule_order`), but
    /// after every path this node is the first to fetch of the connected
    /// peers that lack it too (the one whose order puts it first, as each
    /// of them computes alike): the receivers of one batch first ask for
    /// different files, then take the rest from each other.
    pub(super) fn unschedule(&mut self, path: RelPath) {
        let another_first = self.wants.needs.get(&path).is_some_and(|n| self.first_elsewhere(n));
        let order = (schedule_order(self.me, &path) >> 1) | u64::from(another_first) << 63;
        self.wants.to_schedule.insert((order, path));
    }

    /// Whether a connected peer that lacks `need` too comes before this
    /// node in the order of its path (`schedule_order`): that peer is the
    /// first of the receivers to fetch it, as each of them computes alike.
    fn first_elsewhere(&self, need: &Need) -> bool {
        let mine = schedule_order(self.me, &need.entry.path);
        self.peers
            .keys()
            .any(|p| !need.sources.contains(p) && schedule_order(*p, &need.entry.path) < mine)
    }

    /// Send `msg` to `peer`, as the protocol version spoken with it says it.
    pub(super) fn send(&mut self, peer: NodeId, msg: Message) {
        let msg = msg.spoken_in(self.version_of(peer));
        self.commands.push(Command::Send { peer, msg });
    }

    /// Send `entries` as updates to every connected peer but `except`.
    pub(super) fn broadcast(&mut self, entries: Vec<Entry>, except: Option<NodeId>) {
        let peers: Vec<NodeId> = self.peers.keys().copied().filter(|p| Some(*p) != except).collect();
        for peer in peers {
            for chunk in entries.chunks(MAX_ENTRIES) {
                self.send(peer, Message::Update { entries: chunk.to_vec() });
            }
        }
    }

    /// The index now holds `entry`, applied on disk.
    pub(super) fn applied(&mut self, peer: Option<NodeId>, entry: Entry) {
        self.record(entry, peer);
    }

    /// Put `entry` in the index and announce it to every peer but `except`
    /// (which has it). Every change is announced, even one that changed
    /// nothing on disk here: a `TreeDigest`'s sequence number tells a peer
    /// it has every change up to it (see `exchange.rs`).
    pub(super) fn record(&mut self, entry: Entry, except: Option<NodeId>) {
        self.settle(&entry);
        self.index.insert(entry.clone());
        self.broadcast(vec![entry], except);
    }

    /// The index now holds `e`: forget the wants and requests it settles.
    /// A request left in flight would let its older content, arriving
    /// later, replace `e` on disk (found by the simulation). Every peer
    /// that offered it may have nothing more to send us now, whoever sent
    /// it (found by the bench: a peer was called synchronized only at the
    /// next local change).
    pub(super) fn settle(&mut self, e: &Entry) {
        if self.upkeep.retries.get(&e.path).is_some_and(|r| !beats(&r.entry, e)) {
            self.upkeep.retries.remove(&e.path);
        }
        let asked = self.wants.inflight.get(&e.path).filter(|i| !beats(&i.entry, e)).map(|i| i.peer);
        if asked.is_some() {
            self.wants.inflight.remove(&e.path);
            self.unschedule(e.path.clone());
        }
        let offered = match self.wants.needs.get(&e.path) {
            Some(n) if !beats(&n.entry, e) => self.wants.needs.remove(&e.path).map(|n| n.sources).unwrap_or_default(),
            _ => BTreeSet::new(),
        };
        self.settle_swarm(e);
        for peer in offered.into_iter().chain(asked) {
            self.check_synced(peer);
        }
    }

    /// The folders above `path`, innermost first, that the index holds as
    /// deleted: when `path` is gone, they are removed while they are empty.
    /// A folder whose deletion arrived while it still held something stays
    /// as the container of what it holds, and goes with the last of it
    /// (found by the simulation: such folders used to stay behind). A
    /// file's tombstone counts too: a folder made on the way to a file
    /// received below it is such a container (found by the workload).
    pub(super) fn deleted_ancestors(&self, path: &RelPath) -> Vec<RelPath> {
        path.ancestors()
            .into_iter()
            .rev()
            .take_while(|d| self.index.get(d).is_some_and(|e| e.deleted))
            .collect()
    }

    /// Remove folder `dir` (deleted, kept for what it held) and then the
    /// deleted folders above it, while each is empty.
    pub(super) fn remove_container(&mut self, dir: &RelPath) {
        let mut dirs = vec![dir.clone()];
        dirs.extend(self.deleted_ancestors(dir));
        self.remove_empty_dirs(dirs);
    }

    /// `path` is gone from disk: remove the deleted folders it alone kept.
    pub(super) fn vacated(&mut self, path: &RelPath) {
        let dirs = self.deleted_ancestors(path);
        self.remove_empty_dirs(dirs);
    }

    /// Remove `dirs` (innermost first) while each is empty, up to the first
    /// that a command already on its way makes live again: a folder a
    /// retried `MakeDir` makes is not removed after it as the empty
    /// container it was (found by the workload, faults seed 7200021731).
    fn remove_empty_dirs(&mut self, mut dirs: Vec<RelPath>) {
        if dirs.is_empty() {
            return;
        }
        let made: BTreeSet<&RelPath> = self
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Apply { action, .. } => action.installs().map(|e| &e.path),
                _ => None,
            })
            .collect();
        if let Some(first_made) = dirs.iter().position(|d| made.contains(d)) {
            dirs.truncate(first_made);
        }
        if !dirs.is_empty() {
            self.commands.push(Command::RemoveEmptyDirs { dirs });
        }
    }
}

/// Where `path` comes in `me`'s order of asking: a hash of both, the same
/// on every build, since the receivers' rendezvous needs every node to
/// agree on it (std's `DefaultHasher` may change between Rust releases,
/// and nodes of two versions run side by side). FNV-1a over both, then
/// splitmix64's finalizer, so that each peer's order is its own.
fn schedule_order(me: NodeId, path: &RelPath) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in me.0.to_le_bytes().iter().chain(path.as_str().as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `commands` with each peer's updates merged into one message while
/// nothing else is sent to that peer in between (up to `MAX_ENTRIES`): a
/// batch of received files is announced to each peer in one `update`, not
/// one per file. An update only moves earlier, never past another message
/// to the same peer, and the index already holds what it announces.
fn coalesce_updates(commands: Vec<Command>) -> Vec<Command> {
    let mut out: Vec<Command> = Vec::with_capacity(commands.len());
    let mut open: BTreeMap<NodeId, usize> = BTreeMap::new();
    for cmd in commands {
        match cmd {
            Command::Send {
                peer,
                msg: Message::Update { entries },
            } => {
                if let Some(Command::Send {
                    msg: Message::Update { entries: into },
                    ..
                }) = open.get(&peer).and_then(|i| out.get_mut(*i))
                {
                    if into.len() + entries.len() <= MAX_ENTRIES {
                        into.extend(entries);
                        continue;
                    }
                }
                open.insert(peer, out.len());
                out.push(Command::Send {
                    peer,
                    msg: Message::Update { entries },
                });
            }
            other => {
                if let Some(peer) = other.peer() {
                    open.remove(&peer);
                }
                out.push(other);
            }
        }
    }
    out
}

//! The connection policy, sans IO: which node to dial (one side dials: the
//! smaller id), which of two connections with a peer to keep (the one
//! dialed by the smaller id), the caps on peers and on addresses heard,
//! the backoff after a refusal, and when a cap is worth a warning. The
//! node feeds it what happened and carries out the decision it returns.
//!
//! Owns: who is connected (by which dialer, as which `ConnId`), who is
//! being dialled, the addresses heard in announcements, the nodes heard
//! announcing another key, the refused nodes and when, and the capacity
//! warning latch. Must not: do IO, spawn, read a clock (every method that
//! needs the time takes `now`) or log (the node logs what it is told).

use crate::transport::limits::{MAX_HANDSHAKES, MAX_PEERS};
use crate::wire::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Most addresses remembered from announcements, and most nodes remembered
/// as foreign or refused (a flood of made-up ids stops here).
pub const MAX_KNOWN_PEERS: usize = 1024;
/// How long a node whose handshake was refused is not dialled again.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(30);

/// Names one connection with a peer, so that events of a connection that
/// was replaced are told from those of the current one.
pub type ConnId = u64;

/// What an announcement from a node at an address means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnouncementOutcome {
    /// The node, or this address of it, was not known: worth a log line
    /// and an early announcement of our own.
    pub news: bool,
    /// Dial it (if a handshake slot is free; then call `dialing`).
    pub dial: bool,
}

/// What to do with a connection whose handshake succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// The first connection with this peer: keep it, as this `ConnId`.
    Keep(ConnId),
    /// Keep it, as this `ConnId`, after dropping the one held: that one
    /// was dialed by the larger id, or by the same dialer (then it is dead
    /// but not yet noticed).
    Replace(ConnId),
    /// Close it: the connection held was dialed by the smaller id.
    Duplicate,
    /// Close it: `MAX_PEERS` are connected. `warn`: the first time since
    /// there was room (log it; the next ones are closed silently).
    OverCapacity { warn: bool },
}

/// A connected peer, as the policy sees it.
#[derive(Debug, Clone, Copy)]
struct Connected {
    conn: ConnId,
    /// Who dialled the connection (see `keep_new`).
    dialer: NodeId,
}

/// The connection policy of one node.
#[derive(Debug)]
pub struct Peering {
    me: NodeId,
    connected: BTreeMap<NodeId, Connected>,
    dialing: BTreeSet<NodeId>,
    /// Addresses heard in announcements.
    known: BTreeMap<NodeId, SocketAddr>,
    /// Nodes heard announcing another key (or none), reported once each.
    foreign: BTreeSet<NodeId>,
    /// Nodes whose handshake refused (or was refused), and when.
    refused: BTreeMap<NodeId, SystemTime>,
    /// A cap was hit and reported; reset when there is room again.
    at_capacity: bool,
    next_conn: ConnId,
}

impl Peering {
    /// The policy of node `me`, which knows no one yet.
    pub fn new(me: NodeId) -> Peering {
        Peering {
            me,
            connected: BTreeMap::new(),
            dialing: BTreeSet::new(),
            known: BTreeMap::new(),
            foreign: BTreeSet::new(),
            refused: BTreeMap::new(),
            at_capacity: false,
            next_conn: 0,
        }
    }

    /// `node` announced itself (with our key) at `addr`: learn the address
    /// and say whether to dial it. Nothing is marked as dialled: the node
    /// dials only with a handshake slot, and then calls `dialing`.
    pub fn on_announcement(&mut self, node: NodeId, addr: SocketAddr, now: SystemTime) -> AnnouncementOutcome {
        let news = self.learn(node, addr);
        AnnouncementOutcome {
            news,
            dial: self.should_dial(node, now),
        }
    }

    /// We are dialling `node`: it is not dialled again until the dial
    /// fails (`dial_failed`) or its handshake succeeds (`handshaken`).
    pub fn dialing(&mut self, node: NodeId) {
        self.dialing.insert(node);
    }

    /// Our dial of `node` (one heard announcing) or its handshake failed;
    /// `refused`: it refused us (or we it), so it is not dialled again for
    /// `REFUSED_BACKOFF` after `now`.
    pub fn dial_failed(&mut self, node: NodeId, refused: bool, now: SystemTime) {
        self.dialing.remove(&node);
        if refused {
            if self.refused.len() >= MAX_KNOWN_PEERS {
                self.refused.clear();
            }
            self.refused.insert(node, now);
        }
    }

    /// No handshake slot was free for a connection (`MAX_HANDSHAKES` are
    /// in their handshake). True the first time since there was room:
    /// report it then, and not again until a handshake finds room.
    pub fn handshake_slots_full(&mut self) -> bool {
        !std::mem::replace(&mut self.at_capacity, true)
    }

    /// A connection with `peer`, dialled by `dialer`, finished its
    /// handshake; `accepted_in_handshake`: how many connections we accepted
    /// are still in theirs. Keep one connection per peer (see `keep_new`)
    /// and at most `MAX_PEERS` of them. On `Keep` and `Replace` the new
    /// connection counts as connected.
    pub fn handshaken(&mut self, peer: NodeId, dialer: NodeId, accepted_in_handshake: usize) -> Register {
        self.dialing.remove(&peer);
        if accepted_in_handshake < MAX_HANDSHAKES && self.connected.len() < MAX_PEERS {
            self.at_capacity = false;
        }
        let existing = self.connected.get(&peer).copied();
        if existing.is_none() && self.connected.len() >= MAX_PEERS {
            return Register::OverCapacity {
                warn: !std::mem::replace(&mut self.at_capacity, true),
            };
        }
        if existing.is_some_and(|e| !keep_new(e.dialer, dialer)) {
            return Register::Duplicate;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.connected.insert(peer, Connected { conn, dialer });
        match existing {
            Some(_) => Register::Replace(conn),
            None => Register::Keep(conn),
        }
    }

    /// Connection `conn` with `peer` closed (or was dropped). A connection
    /// already replaced by a newer one changes nothing.
    pub fn disconnected(&mut self, peer: NodeId, conn: ConnId) {
        if self.connected.get(&peer).is_some_and(|c| c.conn == conn) {
            self.connected.remove(&peer);
        }
    }

    /// `node` announced another key than ours (or none): true the first
    /// time it is heard (report it once).
    pub fn foreign(&mut self, node: NodeId) -> bool {
        if self.foreign.len() >= MAX_KNOWN_PEERS {
            self.foreign.clear();
        }
        self.foreign.insert(node)
    }

    /// Learn `addr` for `node` from an announcement; true if it is news.
    fn learn(&mut self, node: NodeId, addr: SocketAddr) -> bool {
        if self.known.get(&node) == Some(&addr) {
            return false;
        }
        if self.known.len() >= MAX_KNOWN_PEERS && !self.known.contains_key(&node) {
            // A flood of made-up ids must not keep real newcomers out (it
            // used to): forget the nodes we are not connected to; real ones
            // are learnt again from their next announcement.
            let connected = &self.connected;
            self.known.retain(|id, _| connected.contains_key(id));
        }
        self.known.insert(node, addr);
        true
    }

    /// One side dials: the smaller id; the other waits to be dialled. A
    /// node that refused us (another key behind a replayed fingerprint, a
    /// version we do not speak) is not dialled at every announcement.
    fn should_dial(&self, node: NodeId, now: SystemTime) -> bool {
        let backing_off = self
            .refused
            .get(&node)
            .is_some_and(|t| now.duration_since(*t).is_ok_and(|d| d < REFUSED_BACKOFF));
        self.me < node && !backing_off && !self.connected.contains_key(&node) && !self.dialing.contains(&node)
    }
}

/// Of two connections with the same peer, keep the one dialed by the
/// smaller node id; both sides apply the same rule, so they keep the same
/// one. A new connection from the same dialer replaces the old (the old one
/// is dead but not yet noticed).
fn keep_new(existing_dialer: NodeId, new_dialer: NodeId) -> bool {
    new_dialer <= existing_dialer
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId(10);
    const LARGER: NodeId = NodeId(20);
    const SMALLER: NodeId = NodeId(5);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 1, 2], port))
    }

    /// Connect `peer`, dialled by the larger id of the pair, and return
    /// its connection.
    fn connect(p: &mut Peering, peer: NodeId) -> ConnId {
        let dialer = p.me.max(peer);
        match p.handshaken(peer, dialer, 0) {
            Register::Keep(conn) => conn,
            other => panic!("{peer:?}: expected Keep, got {other:?}"),
        }
    }

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

    #[test]
    fn only_the_smaller_id_dials() {
        let mut p = Peering::new(ME);
        assert!(p.on_announcement(LARGER, addr(1), t0()).dial, "we are the smaller id");
        assert!(!p.on_announcement(SMALLER, addr(2), t0()).dial, "the smaller id dials us");
        assert!(!p.on_announcement(ME, addr(3), t0()).dial, "never ourselves");
    }

    #[test]
    fn news_only_for_a_new_node_or_a_new_address() {
        let mut p = Peering::new(ME);
        assert!(p.on_announcement(LARGER, addr(1), t0()).news);
        assert!(!p.on_announcement(LARGER, addr(1), t0()).news, "the same address again");
        assert!(p.on_announcement(LARGER, addr(2), t0()).news, "it moved");
        assert!(p.on_announcement(SMALLER, addr(2), t0()).news, "a node we do not dial is news too");
    }

    #[test]
    fn not_dialled_while_dialling_or_connected() {
        let mut p = Peering::new(ME);
        assert!(p.on_announcement(LARGER, addr(1), t0()).dial);
        // No handshake slot: nothing marked, the next announcement dials.
        assert!(p.on_announcement(LARGER, addr(1), t0()).dial);
        p.dialing(LARGER);
        assert!(!p.on_announcement(LARGER, addr(1), t0()).dial, "a dial is under way");
        // A failure that is no refusal: dialled at the next announcement.
        p.dial_failed(LARGER, false, t0());
        assert!(p.on_announcement(LARGER, addr(1), t0()).dial);
        p.dialing(LARGER);
        let conn = connect(&mut p, LARGER);
        assert!(!p.on_announcement(LARGER, addr(1), t0()).dial, "connected");
        p.disconnected(LARGER, conn);
        assert!(p.on_announcement(LARGER, addr(1), t0()).dial, "dialled again once gone");
    }

    #[test]
    fn a_refusing_node_waits_out_the_backoff() {
        let mut p = Peering::new(ME);
        p.dialing(LARGER);
        p.dial_failed(LARGER, true, t0());
        assert!(!p.on_announcement(LARGER, addr(1), t0()).dial);
        let almost = t0() + REFUSED_BACKOFF - Duration::from_millis(1);
        assert!(!p.on_announcement(LARGER, addr(1), almost).dial);
        assert!(
            p.on_announcement(LARGER, addr(1), t0() + REFUSED_BACKOFF).dial,
            "dialled again after 30 s"
        );
        assert_eq!(REFUSED_BACKOFF, Duration::from_secs(30));
        // Another refusal starts the wait again.
        p.dial_failed(LARGER, true, t0() + REFUSED_BACKOFF);
        assert!(!p.on_announcement(LARGER, addr(1), t0() + REFUSED_BACKOFF).dial);
    }

    #[test]
    fn the_refused_list_is_capped() {
        let mut p = Peering::new(NodeId(0));
        for i in 1..=MAX_KNOWN_PEERS as u64 {
            p.dial_failed(NodeId(i), true, t0());
        }
        assert!(!p.on_announcement(NodeId(1), addr(1), t0()).dial);
        // One more: the list is forgotten, so the first is dialled again.
        p.dial_failed(NodeId(MAX_KNOWN_PEERS as u64 + 1), true, t0());
        assert!(p.on_announcement(NodeId(1), addr(1), t0()).dial);
        assert!(!p.on_announcement(NodeId(MAX_KNOWN_PEERS as u64 + 1), addr(2), t0()).dial);
    }

    #[test]
    fn keep_replace_or_duplicate_for_every_dialer() {
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Want {
            Replace,
            Duplicate,
        }
        // (us, peer, dialer of the one held, dialer of the new one, decision)
        let cases = [
            // We are the smaller id: our dial is the one both keep.
            (ME, LARGER, ME, ME, Want::Replace),
            (ME, LARGER, ME, LARGER, Want::Duplicate),
            (ME, LARGER, LARGER, ME, Want::Replace),
            (ME, LARGER, LARGER, LARGER, Want::Replace),
            // We are the larger id: the peer's dial is the one both keep.
            (ME, SMALLER, ME, ME, Want::Replace),
            (ME, SMALLER, ME, SMALLER, Want::Replace),
            (ME, SMALLER, SMALLER, ME, Want::Duplicate),
            (ME, SMALLER, SMALLER, SMALLER, Want::Replace),
        ];
        for (me, peer, held, new, want) in cases {
            let mut p = Peering::new(me);
            let Register::Keep(first) = p.handshaken(peer, held, 0) else {
                panic!("the first connection is kept");
            };
            let got = p.handshaken(peer, new, 0);
            let case = format!("us {me:?}, peer {peer:?}, held dialled by {held:?}, new by {new:?}");
            match (want, got) {
                (Want::Replace, Register::Replace(second)) => {
                    assert_ne!(first, second, "{case}: a new connection id");
                    // The replaced connection's close forgets nothing: the
                    // peer is still connected, by the new one.
                    p.disconnected(peer, first);
                    assert!(matches!(p.handshaken(peer, new, 0), Register::Replace(_)), "{case}: forgotten");
                }
                (Want::Duplicate, Register::Duplicate) => {
                    // The held one stays: a close of it forgets the peer.
                    p.disconnected(peer, first);
                    assert!(matches!(p.handshaken(peer, new, 0), Register::Keep(_)), "{case}: gone");
                }
                _ => panic!("{case}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn over_capacity_closes_newcomers_and_warns_once() {
        let mut p = Peering::new(NodeId(0));
        for i in 1..=MAX_PEERS as u64 {
            connect(&mut p, NodeId(i));
        }
        let (a, b) = (NodeId(1000), NodeId(1001));
        assert_eq!(p.handshaken(a, a, 0), Register::OverCapacity { warn: true });
        assert_eq!(p.handshaken(b, b, 0), Register::OverCapacity { warn: false }, "silently");
        // A connected peer reconnecting is no newcomer.
        assert!(matches!(p.handshaken(NodeId(1), NodeId(0), 0), Register::Replace(_)));
        // A closed newcomer is not counted as connected.
        assert!(p.on_announcement(a, addr(1), t0()).dial);
    }

    #[test]
    fn room_again_resets_the_warning_latch() {
        let mut p = Peering::new(NodeId(0));
        let conns: Vec<ConnId> = (1..=MAX_PEERS as u64).map(|i| connect(&mut p, NodeId(i))).collect();
        let newcomer = |i: u64| NodeId(1000 + i);
        assert_eq!(p.handshaken(newcomer(0), newcomer(0), 0), Register::OverCapacity { warn: true });
        p.disconnected(NodeId(1), conns[0]);
        // Room for one: it is kept, and the latch is reset.
        assert!(matches!(p.handshaken(newcomer(1), newcomer(1), 0), Register::Keep(_)));
        assert_eq!(p.handshaken(newcomer(2), newcomer(2), 0), Register::OverCapacity { warn: true });
        // Room among the peers but not among the accepted handshakes: no reset.
        p.disconnected(NodeId(2), conns[1]);
        assert!(matches!(p.handshaken(newcomer(3), newcomer(3), MAX_HANDSHAKES), Register::Keep(_)));
        assert_eq!(p.handshaken(newcomer(4), newcomer(4), 0), Register::OverCapacity { warn: false });
    }

    #[test]
    fn full_handshake_slots_are_reported_once_until_a_handshake_finds_room() {
        let mut p = Peering::new(ME);
        assert!(p.handshake_slots_full());
        assert!(!p.handshake_slots_full(), "once");
        // A handshake while accepted handshakes are still at the cap: no reset.
        assert!(matches!(p.handshaken(SMALLER, SMALLER, MAX_HANDSHAKES), Register::Keep(_)));
        assert!(!p.handshake_slots_full());
        // One with room: reported again the next time.
        connect(&mut p, LARGER);
        assert!(p.handshake_slots_full());
        // The latch is the same as the peer cap's.
        let mut p = Peering::new(NodeId(0));
        assert!(p.handshake_slots_full());
        for i in 1..=MAX_PEERS as u64 {
            assert!(matches!(p.handshaken(NodeId(i), NodeId(i), MAX_HANDSHAKES), Register::Keep(_)));
        }
        assert_eq!(p.handshaken(NodeId(1000), NodeId(1000), 0), Register::OverCapacity { warn: false });
    }

    #[test]
    fn a_flood_of_ids_does_not_keep_a_newcomer_out() {
        let mut p = Peering::new(NodeId(0));
        let real = NodeId(1);
        connect(&mut p, real);
        assert!(p.on_announcement(real, addr(1), t0()).news);
        // Made-up ids fill the known addresses.
        for i in 0..MAX_KNOWN_PEERS as u64 - 1 {
            assert!(p.on_announcement(NodeId(1_000_000 + i), addr(2), t0()).news);
        }
        let newcomer = NodeId(2);
        let heard = p.on_announcement(newcomer, addr(3), t0());
        assert!(heard.news && heard.dial, "a real newcomer is learnt and dialled");
        assert!(!p.on_announcement(newcomer, addr(3), t0()).news, "and remembered");
        // The connected node's address was kept through the floods.
        assert!(!p.on_announcement(real, addr(1), t0()).news);
        // Flooded ids were forgotten: heard again, they are news.
        assert!(p.on_announcement(NodeId(1_000_000), addr(2), t0()).news);
    }

    #[test]
    fn known_addresses_stay_under_the_cap() {
        let mut p = Peering::new(NodeId(0));
        for i in 1..=MAX_KNOWN_PEERS as u64 * 3 {
            p.on_announcement(NodeId(i), addr(1), t0());
            assert!(p.known.len() <= MAX_KNOWN_PEERS, "{} addresses", p.known.len());
        }
    }

    #[test]
    fn foreign_nodes_are_reported_once() {
        let mut p = Peering::new(ME);
        assert!(p.foreign(LARGER));
        assert!(!p.foreign(LARGER), "once");
        assert!(p.foreign(SMALLER), "another node");
        // Past the cap the set is forgotten: reported again, once.
        for i in 0..MAX_KNOWN_PEERS as u64 {
            p.foreign(NodeId(1000 + i));
        }
        assert!(p.foreign(LARGER));
        assert!(!p.foreign(LARGER));
    }
}

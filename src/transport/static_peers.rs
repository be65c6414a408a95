//! Static peers (`--peer HOST:PORT`): addresses this node keeps dialling,
//! for peers that broadcast cannot reach, with exponential backoff between
//! failed attempts (1 s doubling to 30 s; back to 1 s after a connection).
//!
//! Owns: when each target is due for a dial. Must not: dial (the node
//! does, through `Net`) or decide which of two connections stays (the
//! one-connection-per-pair rule in `peering` does: a static peer's node id is
//! learnt from its hello, and a target whose node is connected by any
//! connection, dialled by either side, is not dialled again).

use crate::wire::NodeId;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// First wait after a failed dial or a lost connection.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Target {
    /// `HOST:PORT` as given.
    addr: String,
    /// The node that answered there last.
    node: Option<NodeId>,
    dialing: bool,
    /// The target is this node itself.
    is_self: bool,
    next_attempt: SystemTime,
    backoff: Duration,
    /// Why the last attempt failed, until one succeeds.
    last_failure: Option<String>,
}

/// A static target not connected now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconnected {
    pub addr: String,
    /// Until the next attempt (zero while one runs).
    pub wait: Duration,
    /// Why the last attempt failed, if one did.
    pub last_failure: Option<String>,
}

/// Every static target and when to dial it next.
#[derive(Debug, Clone, Default)]
pub struct StaticPeers {
    targets: Vec<Target>,
}

impl StaticPeers {
    /// Targets due at once.
    pub fn new(addrs: &[String], now: SystemTime) -> StaticPeers {
        StaticPeers {
            targets: addrs
                .iter()
                .map(|a| Target {
                    addr: a.clone(),
                    node: None,
                    dialing: false,
                    is_self: false,
                    next_attempt: now,
                    backoff: BACKOFF_MIN,
                    last_failure: None,
                })
                .collect(),
        }
    }

    /// The targets to dial now (index, address), marked as dialling.
    /// `connected` are the nodes this node holds a connection with.
    pub fn due(&mut self, now: SystemTime, connected: &BTreeSet<NodeId>) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, t) in self.targets.iter_mut().enumerate() {
            if t.dialing || t.is_self || t.node.is_some_and(|n| connected.contains(&n)) || now < t.next_attempt {
                continue;
            }
            t.dialing = true;
            out.push((i, t.addr.clone()));
        }
        out
    }

    /// The dial of target `i` failed (`why`, said in `status`): try again
    /// after the backoff, which doubles up to `BACKOFF_MAX`. Returns the
    /// wait.
    pub fn failed(&mut self, i: usize, now: SystemTime, why: String) -> Duration {
        let Some(t) = self.targets.get_mut(i) else { return BACKOFF_MIN };
        t.dialing = false;
        t.last_failure = Some(why);
        let wait = t.backoff;
        t.next_attempt = now + wait;
        t.backoff = (t.backoff * 2).min(BACKOFF_MAX);
        wait
    }

    /// Target `i` answered as `node`: the backoff starts over.
    pub fn connected(&mut self, i: usize, node: NodeId) {
        if let Some(t) = self.targets.get_mut(i) {
            t.dialing = false;
            t.node = Some(node);
            t.backoff = BACKOFF_MIN;
            t.last_failure = None;
        }
    }

    /// The connection with `node` is gone: its target is due after the
    /// shortest wait.
    pub fn disconnected(&mut self, node: NodeId, now: SystemTime) {
        for t in self.targets.iter_mut().filter(|t| t.node == Some(node)) {
            t.next_attempt = now + t.backoff;
        }
    }

    /// Target `i` is this node itself (a shared list of every host): never
    /// dial it again.
    pub fn forget(&mut self, i: usize) {
        if let Some(t) = self.targets.get_mut(i) {
            t.dialing = false;
            t.is_self = true;
        }
    }

    /// Targets not connected now (itself left out).
    pub fn unconnected(&self, now: SystemTime, connected: &BTreeSet<NodeId>) -> Vec<Unconnected> {
        self.targets
            .iter()
            .filter(|t| !t.is_self && !t.node.is_some_and(|n| connected.contains(&n)))
            .map(|t| {
                let wait = if t.dialing {
                    Duration::ZERO
                } else {
                    t.next_attempt.duration_since(now).unwrap_or_default()
                };
                Unconnected {
                    addr: t.addr.clone(),
                    wait,
                    last_failure: t.last_failure.clone(),
                }
            })
            .collect()
    }

    pub fn addr(&self, i: usize) -> Option<&str> {
        self.targets.get(i).map(|t| t.addr.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut s = StaticPeers::new(&["a:1".to_string()], t0);
        let none = BTreeSet::new();
        assert_eq!(s.due(t0, &none), vec![(0, "a:1".to_string())]);
        assert!(s.due(t0, &none).is_empty(), "not twice while dialling");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let w = s.failed(0, now, "connection refused".into());
            waits.push(w.as_secs());
            assert!(s.due(now + w - Duration::from_millis(1), &none).is_empty());
            now += w;
            assert_eq!(s.due(now, &none).len(), 1);
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        let why = Some("connection refused".to_string());
        assert_eq!(
            s.unconnected(now, &none),
            vec![Unconnected {
                addr: "a:1".into(),
                wait: Duration::ZERO,
                last_failure: why
            }],
            "dialling again, and why the last attempt failed"
        );
        s.connected(0, NodeId(7));
        let conn = BTreeSet::from([NodeId(7)]);
        assert!(s.unconnected(now, &conn).is_empty());
        assert!(s.due(now + BACKOFF_MAX, &conn).is_empty(), "connected: not dialled");
        s.disconnected(NodeId(7), now);
        assert_eq!(s.unconnected(now, &none)[0].last_failure, None, "the last attempt succeeded");
        assert!(s.due(now, &none).is_empty());
        assert_eq!(s.due(now + BACKOFF_MIN, &none).len(), 1, "redialled after the shortest wait");
    }

    #[test]
    fn a_forgotten_target_is_never_due() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut s = StaticPeers::new(&["me:1".to_string()], t0);
        assert_eq!(s.due(t0, &BTreeSet::new()).len(), 1);
        s.forget(0);
        assert!(s.due(t0 + Duration::from_secs(10 * 365 * 86400), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_node_connected_by_its_own_dial_is_not_dialled() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut s = StaticPeers::new(&["b:1".to_string()], t0);
        assert_eq!(s.due(t0, &BTreeSet::new()).len(), 1);
        // Our dial reached B, but B's own dial won the duplicate check.
        s.connected(0, NodeId(2));
        assert!(s.due(t0 + BACKOFF_MAX, &BTreeSet::from([NodeId(2)])).is_empty());
    }
}

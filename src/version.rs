//! Version vectors: which changes of a path a version has seen, to tell a
//! sequential edit (one version saw the other) from a concurrent one (two
//! devices changed the path without seeing each other's change), as
//! Syncthing does.
//!
//! Owns: the vector type, its partial order, `bump` (a local change) and
//! `merge`. Must not: pick winners (`crate::index::beats` does) or decide
//! what to do about a conflict (the engine does).
//!
//! A vector maps a device id (a synced directory's persistent identity, see
//! `node::load_device_id`) to the counter of that device's latest change of
//! the path. Only devices that changed the path appear, so vectors stay as
//! small as the number of devices that ever edited the file. A counter is
//! `max(previous + 1, version)`, where `version` is the change's ranking
//! time in ns: it always grows, and a device whose index was lost does not
//! restart below its old counters.

use crate::wire::NodeId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Device → counter of its latest change. Absent devices count as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Vector(pub BTreeMap<NodeId, u64>);

/// How two vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// The same changes seen.
    Equal,
    /// The first saw every change of the second, and more.
    Descends,
    /// The second saw every change of the first, and more.
    Precedes,
    /// Each saw a change the other did not: a concurrent edit.
    Concurrent,
}

impl Vector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, device: NodeId) -> u64 {
        self.0.get(&device).copied().unwrap_or(0)
    }

    /// A one-device vector.
    pub fn single(device: NodeId, counter: u64) -> Vector {
        Vector(BTreeMap::from([(device, counter)]))
    }

    /// This vector after `device` made a change ranked at `version` (ns).
    pub fn bump(&self, device: NodeId, version: i64) -> Vector {
        let mut v = self.clone();
        let next = self.get(device).saturating_add(1).max(u64::try_from(version).unwrap_or(0));
        v.0.insert(device, next);
        v
    }

    /// The vector that has seen everything either has seen.
    pub fn merge(&self, other: &Vector) -> Vector {
        let mut v = self.clone();
        for (d, c) in &other.0 {
            let e = v.0.entry(*d).or_insert(0);
            *e = (*e).max(*c);
        }
        v
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &Vector) -> Causality {
        let mut greater = false;
        let mut less = false;
        for d in self.0.keys().chain(other.0.keys()) {
            match self.get(*d).cmp(&other.get(*d)) {
                Ordering::Greater => greater = true,
                Ordering::Less => less = true,
                Ordering::Equal => {}
            }
        }
        match (greater, less) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Descends,
            (false, true) => Causality::Precedes,
            (true, true) => Causality::Concurrent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    #[test]
    fn sequential_and_concurrent_changes() {
        let base = Vector::default().bump(A, 10);
        assert_eq!(base, Vector::single(A, 10));
        // B edits what A made: B's version saw A's.
        let b = base.bump(B, 20);
        assert_eq!(b.compare(&base), Causality::Descends);
        assert_eq!(base.compare(&b), Causality::Precedes);
        // A edits its own version without seeing B's: concurrent.
        let a = base.bump(A, 15);
        assert_eq!(a.compare(&b), Causality::Concurrent);
        assert_eq!(b.compare(&a), Causality::Concurrent);
        // The merge saw both.
        let m = a.merge(&b);
        assert_eq!(m.compare(&a), Causality::Descends);
        assert_eq!(m.compare(&b), Causality::Descends);
        assert_eq!(m.compare(&m.clone()), Causality::Equal);
        // The empty vector (unknown history) precedes every other.
        assert_eq!(Vector::default().compare(&a), Causality::Precedes);
    }

    #[test]
    fn counters_always_grow() {
        let v = Vector::single(A, 100);
        // A change ranked earlier than the counter still moves it on.
        assert_eq!(v.bump(A, 5).get(A), 101);
        assert_eq!(v.bump(A, 500).get(A), 500);
        assert_eq!(Vector::default().bump(A, -7).get(A), 1);
    }

    #[test]
    fn vectors_serialize_as_an_object_of_hex_ids() {
        let v = Vector::single(NodeId(0xfeed), 42).bump(NodeId(1), 7);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"0000000000000001":7,"000000000000feed":42}"#);
        let back: Vector = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }
}

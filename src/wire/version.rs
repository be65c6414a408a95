//! Version vectors: which changes of a path a version has seen, to tell a
//! sequential edit (one version saw the other) from a concurrent one (two
//! devices changed the path without seeing each other's change), as
//! Syncthing does.
//!
//! Owns: the vector type, its partial order, `bump` (a local change) and
//! `merge`. Must not: pick winners (`crate::engine::index::beats` does) or decide
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
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Device → counter of its latest change. Absent devices count as 0.
/// Sorted by device, no zero counters; on the wire a JSON object. (A
/// sorted `Vec`, not a `BTreeMap`: most vectors hold one or two devices,
/// and a map's first node costs about 200 bytes, for every path in the
/// index.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vector(Vec<(NodeId, u64)>);

impl Serialize for Vector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(d, c)| (d, c)))
    }
}

impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Vector, D::Error> {
        let map = BTreeMap::<NodeId, u64>::deserialize(d)?;
        Ok(Vector(map.into_iter().filter(|(_, c)| *c > 0).collect()))
    }
}

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

    /// The (device, counter) pairs, in device order (for the index store).
    pub fn pairs(&self) -> &[(NodeId, u64)] {
        &self.0
    }

    /// A vector from (device, counter) pairs in any order.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (NodeId, u64)>) -> Vector {
        let mut v = Vector::default();
        for (d, c) in pairs {
            v.raise(d, c);
        }
        v
    }

    pub fn get(&self, device: NodeId) -> u64 {
        self.find(device).map_or(0, |i| self.0[i].1)
    }

    fn find(&self, device: NodeId) -> Result<usize, usize> {
        self.0.binary_search_by_key(&device, |(d, _)| *d)
    }

    /// Raise `device`'s counter to at least `counter`.
    fn raise(&mut self, device: NodeId, counter: u64) {
        match self.find(device) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(counter),
            Err(_) if counter == 0 => {}
            Err(i) => self.0.insert(i, (device, counter)),
        }
    }

    /// A one-device vector.
    pub fn single(device: NodeId, counter: u64) -> Vector {
        let mut v = Vector::default();
        v.raise(device, counter);
        v
    }

    /// This vector after `device` made a change ranked at `version` (ns).
    pub fn bump(&self, device: NodeId, version: i128) -> Vector {
        let mut v = self.clone();
        let version = u64::try_from(version.max(0)).unwrap_or(u64::MAX);
        let next = self.get(device).saturating_add(1).max(version);
        v.raise(device, next);
        v
    }

    /// The vector that has seen everything either has seen.
    pub fn merge(&self, other: &Vector) -> Vector {
        let mut v = self.clone();
        for (d, c) in &other.0 {
            v.raise(*d, *c);
        }
        v
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &Vector) -> Causality {
        let mut greater = false;
        let mut less = false;
        for d in self.0.iter().chain(&other.0).map(|(d, _)| d) {
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

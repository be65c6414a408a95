//! What a path's version is made of: the node and device ids, the
//! content hash, the kinds of path, and the entry every node compares to
//! decide a winner, with how each travels in JSON.
//!
//! Owns: those types and their encodings. Must not: decide between
//! versions (`crate::engine::index::beats` does) or do IO.

use super::{dialect, RelPath, Vector, Xattrs};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A node's identity for one run: 64 random bits, shown as 16 hex digits.
/// The same type names a device (a synced directory's persistent identity,
/// see `crate::wire::version`), whose ids appear in version vectors.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The first 8 hex digits, for conflict-copy names.
    pub fn short(&self) -> String {
        format!("{:08x}", self.0 >> 32)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 16 {
            return Err(serde::de::Error::custom("node id must be 16 hex digits"));
        }
        u64::from_str_radix(&s, 16).map(NodeId).map_err(serde::de::Error::custom)
    }
}

/// A blake3 content hash, shown as 64 hex digits. All zero for directories
/// and deletions.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn of(data: &[u8]) -> Hash {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}
impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}
impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}
impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&written(&self.0))
    }
}
impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        read(&s, &mut out).map_err(|()| serde::de::Error::custom("a hash must be 64 hex digits or 43 base64 characters"))?;
        Ok(Hash(out))
    }
}

/// `bytes` as the message being written spells them: hex, or base64 when
/// it is written compact (`dialect`).
fn written(bytes: &[u8]) -> String {
    match dialect::compact() {
        true => dialect::to_base64(bytes),
        false => to_hex(bytes),
    }
}

/// `bytes` as lowercase hex, two digits a byte.
fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 15])
        .map(|d| char::from(b"0123456789abcdef"[usize::from(d)]))
        .collect()
}

/// Fill `out` from `s`, in hex or base64 (told apart by length).
fn read(s: &str, out: &mut [u8]) -> Result<(), ()> {
    match s.len() == 2 * out.len() {
        true => from_hex(s, out),
        false => dialect::from_base64(s, out),
    }
}

/// Fill `out` from `s`, two hex digits a byte, all of `s` and all of `out`.
fn from_hex(s: &str, out: &mut [u8]) -> Result<(), ()> {
    if s.len() != 2 * out.len() || !s.is_ascii() {
        return Err(());
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| ())?;
    }
    Ok(())
}

/// The version a want names by its hash: whole (protocol 6), its first 8
/// bytes (7), or its first 4 (8). A path's versions practically never
/// share them, and the asker checks the whole hash of what comes, so a
/// version served by mistake costs a retry, never a wrong file.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum WantedHash {
    Whole(Hash),
    Prefix([u8; 8]),
    Short([u8; 4]),
}

impl WantedHash {
    /// Whether `hash` is the version named.
    pub fn names(&self, hash: &Hash) -> bool {
        match self {
            WantedHash::Whole(h) => h == hash,
            WantedHash::Prefix(p) => hash.0.starts_with(p),
            WantedHash::Short(p) => hash.0.starts_with(p),
        }
    }

    /// The same version named by the first 8 bytes (as protocol 7 does).
    pub fn prefix(self) -> WantedHash {
        match self {
            WantedHash::Whole(h) => WantedHash::Prefix(first(&h.0)),
            named => named,
        }
    }

    /// The same version named by the first 4 bytes (as protocol 8 does).
    pub fn short(self) -> WantedHash {
        match self {
            WantedHash::Whole(h) => WantedHash::Short(first(&h.0)),
            WantedHash::Prefix(p) => WantedHash::Short(first(&p)),
            short => short,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            WantedHash::Whole(h) => &h.0,
            WantedHash::Prefix(p) => p,
            WantedHash::Short(p) => p,
        }
    }
}

/// The first `N` bytes of `bytes` (which holds at least that many).
fn first<const N: usize>(bytes: &[u8]) -> [u8; N] {
    std::array::from_fn(|i| bytes[i])
}

impl From<Hash> for WantedHash {
    fn from(h: Hash) -> Self {
        WantedHash::Whole(h)
    }
}
impl fmt::Display for WantedHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(self.bytes()))
    }
}
impl fmt::Debug for WantedHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_string()[..8])
    }
}
impl Serialize for WantedHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&written(self.bytes()))
    }
}
impl<'de> Deserialize<'de> for WantedHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = |()| serde::de::Error::custom("a wanted hash must be 64, 16 or 8 hex digits, or 43, 11 or 6 base64 characters");
        match s.len() {
            16 | 11 => {
                let mut p = [0; 8];
                read(&s, &mut p).map_err(bad)?;
                Ok(WantedHash::Prefix(p))
            }
            8 | 6 => {
                let mut p = [0; 4];
                read(&s, &mut p).map_err(bad)?;
                Ok(WantedHash::Short(p))
            }
            _ => {
                let mut h = [0; 32];
                read(&s, &mut h).map_err(bad)?;
                Ok(WantedHash::Whole(Hash(h)))
            }
        }
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Dir,
    File,
    /// A symbolic link (protocol 5): its `target` travels, never what it
    /// points to.
    Symlink,
}

/// A child of a folder and its digest (see `Message::Subtree`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildDigest {
    pub name: String,
    pub digest: Hash,
}

/// One path's version: what every node compares to decide the winner.
/// It travels as `EntryWritten` and is read from `EntryRead`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "EntryRead")]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    /// A tombstone: the path was deleted at `mtime`.
    pub deleted: bool,
    /// File size in bytes (0 for directories and tombstones).
    pub size: u64,
    /// The file's mtime, in nanoseconds since the Unix epoch (for
    /// directories and tombstones: when the change was seen). 128 bits:
    /// any time a filesystem can hold (64-bit nanoseconds end in 2262).
    pub mtime: i128,
    /// The time that ranks this version under last-modified-wins, in
    /// nanoseconds: `mtime`, unless a local change had an mtime no newer than
    /// the version it replaced (a rename, a restored backup), in which case
    /// it is that version plus one, so the user's latest action still wins.
    pub version: i128,
    /// Content hash (zero for directories and tombstones).
    pub hash: Hash,
    /// The version vector: for every device that ever changed this path, the
    /// counter of its latest change (see `crate::wire::version`). Empty when the
    /// history is unknown (an index rebuilt from a scan, an older peer).
    pub vector: Vector,
    /// The device that made this version (zero when unknown).
    pub by: NodeId,
    /// A file with an execute bit set: carried so that a synced script
    /// stays runnable (and a git checkout shows no mode change).
    pub exec: bool,
    /// The permission bits, rwx for user, group and other (at most 0o777,
    /// a JSON number: 0o644 is 420); 0 when unknown (the version came from
    /// a node of protocol 4, or one started with `--no-perms`): then only
    /// `exec` is known. Protocol 5.
    pub mode: u32,
    /// A live symlink's target, as the link holds it (relative or
    /// absolute); its `hash` is the target's, its `size` the target's
    /// length. Absent for everything else. Protocol 5.
    pub target: Option<String>,
    /// A live file's or folder's extended attributes of the `user.`
    /// namespace, when its maker reads them (`--xattrs`); absent when
    /// unknown (a maker without `--xattrs`, a node of protocol 5), present
    /// and empty when there are none. Protocol 6.
    pub xattrs: Option<Xattrs>,
}

/// The vector that `by` and `version` imply, which the compact form leaves
/// out: the maker's one change ranked at `version`, the history of most
/// entries; empty when the maker is unknown or `version` is no counter.
fn implied_vector(by: NodeId, version: i128) -> Vector {
    match (by, u64::try_from(version)) {
        (NodeId(0), _) | (_, Err(_)) => Vector::default(),
        (by, Ok(v)) => Vector::single(by, v),
    }
}

/// An entry as it is written: whole, or compact (protocol 8, see
/// `dialect`) without a `version` equal to its `mtime` and a `vector`
/// that `by` and `version` imply.
#[derive(Serialize)]
struct EntryWritten<'a> {
    path: &'a RelPath,
    kind: Kind,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    size: u64,
    #[serde(with = "nanos")]
    mtime: i128,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "nanos::serialize_some")]
    version: Option<i128>,
    hash: Hash,
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<&'a Vector>,
    by: NodeId,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    exec: bool,
    #[serde(skip_serializing_if = "is_zero")]
    mode: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xattrs: &'a Option<Xattrs>,
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let compact = dialect::compact();
        EntryWritten {
            path: &self.path,
            kind: self.kind,
            deleted: self.deleted,
            size: self.size,
            mtime: self.mtime,
            version: (!compact || self.version != self.mtime).then_some(self.version),
            hash: self.hash,
            vector: (!compact || self.vector.is_empty() || self.vector != implied_vector(self.by, self.version)).then_some(&self.vector),
            by: self.by,
            exec: self.exec,
            mode: self.mode,
            target: &self.target,
            xattrs: &self.xattrs,
        }
        .serialize(s)
    }
}

/// An entry as it is read, in either form: an absent `version` is the
/// `mtime`, an absent `vector` the one `by` and `version` imply (none when
/// `by` is unknown).
#[derive(Deserialize)]
struct EntryRead {
    path: RelPath,
    kind: Kind,
    #[serde(default)]
    deleted: bool,
    size: u64,
    #[serde(with = "nanos")]
    mtime: i128,
    #[serde(default, deserialize_with = "nanos::deserialize_some")]
    version: Option<i128>,
    hash: Hash,
    #[serde(default)]
    vector: Option<Vector>,
    #[serde(default)]
    by: NodeId,
    #[serde(default)]
    exec: bool,
    #[serde(default)]
    mode: u32,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    xattrs: Option<Xattrs>,
}

impl From<EntryRead> for Entry {
    fn from(e: EntryRead) -> Entry {
        let version = e.version.unwrap_or(e.mtime);
        Entry {
            vector: e.vector.unwrap_or_else(|| implied_vector(e.by, version)),
            path: e.path,
            kind: e.kind,
            deleted: e.deleted,
            size: e.size,
            mtime: e.mtime,
            version,
            hash: e.hash,
            by: e.by,
            exec: e.exec,
            mode: e.mode,
            target: e.target,
            xattrs: e.xattrs,
        }
    }
}

pub(super) fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Times in nanoseconds on the wire: a JSON number while it fits 64 bits
/// (every time from 1677 to 2262, as before), a decimal string beyond. A
/// number cannot carry more: messages are internally tagged, and serde
/// buffers their numbers as 64-bit values.
mod nanos {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(ns: &i128, s: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(*ns) {
            Ok(n) => s.serialize_i64(n),
            Err(_) => s.serialize_str(&ns.to_string()),
        }
    }

    pub fn serialize_some<S: Serializer>(ns: &Option<i128>, s: S) -> Result<S::Ok, S::Error> {
        match ns {
            Some(ns) => serialize(ns, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i128>, D::Error> {
        deserialize(d).map(Some)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        struct Nanos;
        impl Visitor<'_> for Nanos {
            type Value = i128;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("nanoseconds: an integer, or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
                Ok(v.into())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
                Ok(v.into())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
                v.parse().map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(Nanos)
    }
}

//! How an index entry is stored in the database: a fixed little-endian
//! layout (the path is the key, not repeated), about 100 bytes for a file
//! with one device in its vector. JSON would be three times that, and the
//! wire's encoding is not meant to be stable storage.
//!
//! Owns: the record layout and its version byte. Must not: decide anything.

use crate::engine::Stat;
use crate::wire::version::Vector;
use crate::wire::{Entry, Hash, Kind, NodeId, RelPath, Xattrs};
use std::collections::BTreeMap;

/// The layout's version, the record's first byte.
const RECORD_FORMAT: u8 = 1;

const DELETED: u8 = 1;
const EXEC: u8 = 2;
const FILE: u8 = 4;
/// The content hash is stored (zero for folders and tombstones: left out).
const HAS_HASH: u8 = 8;
/// The file's `Stat` when this node last looked at it follows the vector.
const HAS_STAT: u8 = 16;
/// A symlink (`FILE` clear); a live one's target closes the record.
const SYMLINK: u8 = 32;
/// The mode follows the stat, as two bytes.
const HAS_MODE: u8 = 64;
/// Extended attributes close the record: a count (u16), then each name
/// (u16 length, bytes) and value (u16 length, bytes).
const HAS_XATTRS: u8 = 128;

/// An entry as the index keeps it: the entry, the sequence number of the
/// change that made it (see `Index::since`), and for a file this node
/// looked at, its inode and change time then (never sent: it is this
/// disk's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub entry: Entry,
    pub seq: u64,
    pub stat: Option<Stat>,
}

pub fn encode(s: &Stored) -> Vec<u8> {
    let e = &s.entry;
    let mut out = Vec::with_capacity(96 + 16 * e.vector.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&s.seq.to_le_bytes());
    let has_hash = e.hash != Hash::ZERO;
    let flags = (if e.deleted { DELETED } else { 0 })
        | (if e.exec { EXEC } else { 0 })
        | (if e.kind == Kind::File { FILE } else { 0 })
        | (if has_hash { HAS_HASH } else { 0 })
        | (if s.stat.is_some() { HAS_STAT } else { 0 })
        | (if e.kind == Kind::Symlink { SYMLINK } else { 0 })
        | (if e.mode != 0 { HAS_MODE } else { 0 })
        | (if e.xattrs.is_some() { HAS_XATTRS } else { 0 });
    out.push(flags);
    out.extend_from_slice(&e.size.to_le_bytes());
    out.extend_from_slice(&e.mtime.to_le_bytes());
    out.extend_from_slice(&e.version.to_le_bytes());
    if has_hash {
        out.extend_from_slice(&e.hash.0);
    }
    out.extend_from_slice(&e.by.0.to_le_bytes());
    let pairs = e.vector.pairs();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (device, counter) in pairs {
        out.extend_from_slice(&device.0.to_le_bytes());
        out.extend_from_slice(&counter.to_le_bytes());
    }
    if let Some(stat) = s.stat {
        out.extend_from_slice(&stat.ino.to_le_bytes());
        out.extend_from_slice(&stat.ctime.to_le_bytes());
    }
    if e.mode != 0 {
        // At most 0o777 (`Entry::check`, and the scan's mask).
        out.extend_from_slice(&(e.mode as u16).to_le_bytes());
    }
    if let Some(target) = &e.target {
        // At most `MAX_LINK_TARGET` bytes.
        out.extend_from_slice(&(target.len() as u16).to_le_bytes());
        out.extend_from_slice(target.as_bytes());
    }
    if let Some(x) = &e.xattrs {
        // Within `MAX_XATTRS_TOTAL` (`Entry::check`, and the scan's limits).
        out.extend_from_slice(&(x.0.len() as u16).to_le_bytes());
        for (name, value) in &x.0 {
            for field in [name.as_bytes(), value] {
                out.extend_from_slice(&(field.len() as u16).to_le_bytes());
                out.extend_from_slice(field);
            }
        }
    }
    out
}

/// The record of `path`, or why it cannot be read.
pub fn decode(path: RelPath, bytes: &[u8]) -> Result<Stored, String> {
    let mut r = Reader(bytes);
    let format = r.take::<1>()?[0];
    if format != RECORD_FORMAT {
        return Err(format!("unknown record format {format}"));
    }
    let seq = u64::from_le_bytes(r.take()?);
    let flags = r.take::<1>()?[0];
    let size = u64::from_le_bytes(r.take()?);
    let mtime = i128::from_le_bytes(r.take()?);
    let version = i128::from_le_bytes(r.take()?);
    let hash = if flags & HAS_HASH != 0 { Hash(r.take()?) } else { Hash::ZERO };
    let by = NodeId(u64::from_le_bytes(r.take()?));
    let n = u32::from_le_bytes(r.take()?) as usize;
    let stat_len = if flags & HAS_STAT != 0 { 24 } else { 0 };
    if n > r.0.len().saturating_sub(stat_len) / 16 {
        return Err("truncated version vector".into());
    }
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push((NodeId(u64::from_le_bytes(r.take()?)), u64::from_le_bytes(r.take()?)));
    }
    let stat = if flags & HAS_STAT != 0 {
        Some(Stat {
            ino: u64::from_le_bytes(r.take()?),
            ctime: i128::from_le_bytes(r.take()?),
        })
    } else {
        None
    };
    let mode = if flags & HAS_MODE != 0 {
        u32::from(u16::from_le_bytes(r.take()?))
    } else {
        0
    };
    let deleted = flags & DELETED != 0;
    let target = if flags & SYMLINK != 0 && !deleted {
        Some(String::from_utf8(r.field()?).map_err(|_| "a symlink target that is not UTF-8".to_string())?)
    } else {
        None
    };
    let xattrs = if flags & HAS_XATTRS != 0 {
        let count = u16::from_le_bytes(r.take()?);
        let mut attrs = BTreeMap::new();
        for _ in 0..count {
            let name = String::from_utf8(r.field()?).map_err(|_| "an extended attribute name that is not UTF-8".to_string())?;
            attrs.insert(name, r.field()?);
        }
        Some(Xattrs(attrs))
    } else {
        None
    };
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    let entry = Entry {
        path,
        kind: match (flags & FILE != 0, flags & SYMLINK != 0) {
            (true, _) => Kind::File,
            (false, true) => Kind::Symlink,
            (false, false) => Kind::Dir,
        },
        deleted,
        size,
        mtime,
        version,
        hash,
        vector: Vector::from_pairs(pairs),
        by,
        exec: flags & EXEC != 0,
        mode,
        target,
        xattrs,
    };
    Ok(Stored { entry, seq, stat })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// A u16 length, then that many bytes.
    fn field(&mut self) -> Result<Vec<u8>, String> {
        let len = usize::from(u16::from_le_bytes(self.take()?));
        if self.0.len() < len {
            return Err("truncated field".into());
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(bytes.to_vec())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.0.len() < N {
            return Err("truncated record".into());
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut out = [0; N];
        out.copy_from_slice(head);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{file, link, tomb};
    use proptest::prelude::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let mut f = file("a/b", 7, b"x");
        f.exec = true;
        f.vector = Vector::from_pairs([(NodeId(3), 9), (NodeId(1), 4)]);
        f.version = i128::MAX;
        f.mtime = i128::MIN;
        let stat = Some(Stat { ino: 77, ctime: -5 });
        let moded = Entry { mode: 0o751, ..f.clone() };
        let attrs = |pairs: &[(&str, &[u8])]| Some(Xattrs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect()));
        let tagged = Entry {
            xattrs: attrs(&[("user.a", b""), ("user.ü", &[0, 255])]),
            ..moded.clone()
        };
        let none = Entry {
            xattrs: attrs(&[]),
            ..f.clone()
        };
        let dead_link = Entry {
            deleted: true,
            target: None,
            ..link("l", 3, "")
        };
        let cases = [
            (f.clone(), None),
            (f, stat),
            (tomb("gone", 9), None),
            (moded, stat),
            (tagged, stat),
            (none, None),
            (link("l", 3, "../ü/x"), None),
            (dead_link, None),
            (
                Entry {
                    kind: Kind::Dir,
                    deleted: false,
                    mode: 0o700,
                    ..tomb("d", 1)
                },
                None,
            ),
        ];
        for (entry, stat) in cases {
            let s = Stored { entry, seq: 42, stat };
            let bytes = encode(&s);
            assert_eq!(decode(s.entry.path.clone(), &bytes), Ok(s.clone()));
            for cut in 0..bytes.len() {
                assert!(decode(s.entry.path.clone(), &bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_record_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(RelPath::new("p").unwrap(), &bytes);
        }
    }
}

//! Protocol versions side by side: which version two nodes speak, what a
//! peer of the older version is sent instead of what it cannot hold, and
//! the checks a received entry passes.
//!
//! A node speaks its own version and the one before it, so a network is
//! upgraded one host at a time (7: small files many to a frame, and
//! wants by a hash prefix; and 6). Its `Hello` and its announcements say the
//! oldest version it speaks in `version` (so a node of that version, which
//! checks only `version`, takes them) and the newest in `newest`; two
//! nodes speak the newest version both know.
//!
//! Owns: those rules. Must not: decide anything about sync (the engine
//! asks `Entry::spoken_in` for each message it sends a peer).

use super::{Entry, Hash, Kind, Message, WantFile, WantedHash, WireError};

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 7;
/// The oldest protocol version this build still speaks with a peer.
pub const OLDEST_PROTOCOL_VERSION: u32 = 6;
/// The longest symlink target carried (Linux's `PATH_MAX` less its NUL).
pub const MAX_LINK_TARGET: usize = 4095;
/// The first version that carries extended attributes.
const XATTRS: u32 = 6;
/// The first version that sends small files many to a frame (`Files`).
pub const FILES_FRAMES: u32 = 7;
/// The first version whose wants name a file's version by the first 8
/// bytes of its hash (`WantedHash::Prefix`).
pub const SHORT_WANTS: u32 = 7;

/// The version spoken with a peer whose hello (or announcement) says it
/// speaks `oldest` to `newest` (`newest` 0: only `oldest`), or `None` when
/// no version is spoken by both.
pub fn common_version(oldest: u32, newest: u32) -> Option<u32> {
    let spoken = PROTOCOL_VERSION.min(newest.max(oldest));
    (spoken >= OLDEST_PROTOCOL_VERSION.max(oldest)).then_some(spoken)
}

impl Entry {
    /// This entry as a peer speaking `version` is sent it. Version 5 holds
    /// no extended attributes: they are unknown there (the peer leaves
    /// its own alone, and the version that knows them wins over that copy
    /// when it comes, see `engine::index::beats`).
    pub fn spoken_in(&self, version: u32) -> Entry {
        match version >= XATTRS || self.xattrs.is_none() {
            true => self.clone(),
            false => Entry {
                xattrs: None,
                ..self.clone()
            },
        }
    }

    /// Refuse an entry no node makes: a mode beyond the permission bits, a
    /// file's mode at odds with `exec`, a symlink without a sound target, a target on
    /// anything else.
    pub fn check(&self) -> Result<(), WireError> {
        let bad = |why| {
            Err(WireError::BadEntry {
                path: self.path.to_string(),
                why,
            })
        };
        if self.mode > 0o777 {
            return bad("a mode beyond the permission bits");
        }
        if self.kind == Kind::File && self.mode != 0 && (self.mode & 0o111 != 0) != self.exec {
            return bad("a mode at odds with its execute bit");
        }
        match (&self.target, self.kind == Kind::Symlink && !self.deleted) {
            (None, false) => Ok(()),
            (Some(_), false) => bad("a target on something that is no live symlink"),
            (None, true) => bad("a symlink without a target"),
            (Some(t), true) if t.is_empty() || t.len() > MAX_LINK_TARGET || t.contains('\0') => {
                bad("a symlink target that no link can hold")
            }
            (Some(t), true) if Hash::of(t.as_bytes()) != self.hash || t.len() as u64 != self.size => {
                bad("a symlink whose hash or size is not its target's")
            }
            (Some(_), true) if self.exec || self.mode != 0 => bad("a symlink with a mode"),
            (Some(_), true) if self.xattrs.is_some() => bad("a symlink with extended attributes"),
            (Some(_), true) => Ok(()),
        }?;
        match &self.xattrs {
            Some(_) if self.deleted => bad("a deletion with extended attributes"),
            Some(x) => x.fault().map_or(Ok(()), bad),
            None => Ok(()),
        }
    }
}

impl Message {
    /// This message as a peer speaking `version` is sent it: from 7 a
    /// want names versions by their hash's prefix; before 6, entries lose
    /// what that version cannot hold (`Entry::spoken_in`).
    pub fn spoken_in(self, version: u32) -> Message {
        if version >= SHORT_WANTS {
            return match self {
                Message::Want { files } => Message::Want {
                    files: files
                        .into_iter()
                        .map(|w| WantFile {
                            hash: w.hash.prefix(),
                            ..w
                        })
                        .collect(),
                },
                other => other,
            };
        }
        if version >= XATTRS {
            return self;
        }
        let down = |entries: Vec<Entry>| entries.iter().map(|e| e.spoken_in(version)).collect();
        match self {
            Message::Index { entries, done } => Message::Index {
                entries: down(entries),
                done,
            },
            Message::Update { entries } => Message::Update { entries: down(entries) },
            Message::FileStart { entry, content } => Message::FileStart {
                entry: entry.spoken_in(version),
                content,
            },
            other => other,
        }
    }

    /// True if a peer speaking `version` may send this (extended
    /// attributes from a peer speaking 5, or a `Files` frame from one
    /// speaking 6, are a forgery or a bug).
    pub fn fits(&self, version: u32) -> bool {
        let fits = |e: &Entry| version >= XATTRS || e.xattrs.is_none();
        match self {
            Message::Index { entries, .. } | Message::Update { entries } => entries.iter().all(fits),
            Message::FileStart { entry, .. } => fits(entry),
            Message::Files { .. } => version >= FILES_FRAMES,
            Message::Want { files } => version >= SHORT_WANTS || files.iter().all(|w| matches!(w.hash, WantedHash::Whole(_))),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{file, link};

    #[test]
    fn two_nodes_speak_the_newest_version_both_know() {
        // A node of version 6 says 5 to 6; one of 7 says 6 to 7; a future
        // node of 8 says 7 to 8; one of 5 says only 5.
        assert_eq!(common_version(5, 6), Some(6));
        assert_eq!(common_version(6, 7), Some(7));
        assert_eq!(common_version(7, 8), Some(7));
        assert_eq!(common_version(5, 0), None);
        assert_eq!(common_version(8, 9), None);
        assert_eq!(common_version(4, 5), None);
    }

    fn tagged(e: Entry) -> Entry {
        Entry {
            xattrs: Some(crate::wire::Xattrs([("user.tag".to_string(), b"v".to_vec())].into())),
            ..e
        }
    }

    #[test]
    fn a_peer_of_version_5_gets_no_extended_attributes() {
        let f = tagged(file("s", 1, b"x"));
        let old = f.spoken_in(5);
        assert_eq!(old, Entry { xattrs: None, ..f.clone() });
        assert_eq!(f.spoken_in(6), f);
        old.check().unwrap();
        let l = link("a", 10, "../b");
        assert_eq!(l.spoken_in(5), l, "version 5 holds links");
    }

    #[test]
    fn entries_no_node_makes_are_refused() {
        let f = file("f", 1, b"x");
        let bad = [
            Entry {
                mode: 0o4755,
                exec: true,
                ..f.clone()
            },
            Entry {
                mode: 0o644,
                exec: true,
                ..f.clone()
            },
            Entry {
                target: Some("x".into()),
                ..f.clone()
            },
            Entry {
                target: None,
                ..link("l", 1, "t")
            },
            Entry {
                target: Some("u".into()),
                ..link("l", 1, "t")
            },
            Entry {
                mode: 0o777,
                exec: true,
                ..link("l", 1, "t")
            },
            tagged(link("l", 1, "t")),
            tagged(crate::wire::testing::tomb("f", 1)),
            Entry {
                xattrs: Some(crate::wire::Xattrs([("trusted.x".to_string(), vec![])].into())),
                ..f.clone()
            },
            link("l", 1, ""),
            link("l", 1, "a\0b"),
            link("l", 1, &"x".repeat(MAX_LINK_TARGET + 1)),
        ];
        for e in bad {
            assert!(e.check().is_err(), "{e:?}");
        }
        let folder = Entry {
            kind: Kind::Dir,
            mode: 0o755,
            ..file("d", 1, b"")
        };
        for good in [
            f,
            link("l", 1, "/etc"),
            Entry {
                mode: 0o444,
                ..file("g", 1, b"")
            },
            tagged(folder.clone()),
            folder,
        ] {
            good.check().unwrap();
        }
    }

    #[test]
    fn a_peer_speaking_5_may_not_send_extended_attributes() {
        let update = |e: Entry| Message::Update { entries: vec![e] };
        assert!(!update(tagged(file("f", 1, b""))).fits(5));
        assert!(update(file("f", 1, b"")).fits(5));
        assert!(update(link("l", 1, "t")).fits(5));
        assert!(update(tagged(file("f", 1, b""))).fits(6));
    }

    #[test]
    fn a_peer_speaking_6_may_not_send_files_frames() {
        let files = Message::Files {
            files: vec![],
            contents: vec![],
        };
        assert!(!files.fits(6));
        assert!(files.fits(7));
    }

    /// From 7 a want names a version by its hash's first 8 bytes; a peer
    /// speaking 6 is sent the whole hash, and may not send a prefix.
    #[test]
    fn wants_name_versions_by_a_prefix_from_7_and_by_the_whole_hash_in_6() {
        let f = file("f", 1, b"f");
        let want = Message::Want {
            files: vec![WantFile {
                path: f.path.clone(),
                hash: f.hash.into(),
            }],
        };
        let hashes = |m: &Message| match m {
            Message::Want { files } => files.iter().map(|w| w.hash).collect::<Vec<_>>(),
            _ => vec![],
        };
        assert_eq!(hashes(&want.clone().spoken_in(6)), vec![WantedHash::Whole(f.hash)]);
        let short = want.spoken_in(7);
        let [prefix] = hashes(&short)[..] else { panic!("{short:?}") };
        assert!(matches!(prefix, WantedHash::Prefix(_)) && prefix.names(&f.hash));
        assert!(!prefix.names(&Hash::of(b"another")));
        assert!(!short.fits(6));
        assert!(short.fits(7));
        let back = crate::wire::decode(&crate::wire::encode(&short)).unwrap().unwrap().0;
        assert_eq!(hashes(&back), vec![prefix]);
    }
}

//! Protocol versions side by side: which version two nodes speak, and
//! the checks a received entry passes.
//!
//! A node speaks its own version and the one before it, so a network is
//! upgraded one host at a time (8: messages written compact, see
//! `dialect`; and 7). Its `Hello` and its announcements say the oldest
//! version it speaks in `version` (so a node of that version, which checks
//! only `version`, takes them) and the newest in `newest`; two nodes speak
//! the newest version both know. Between 7 and 8 what differs is how a
//! message is written (`wire::encode_in`), and how many bytes of a hash a
//! want names a version by (`Message::spoken_in`).
//!
//! Owns: those rules. Must not: decide anything about sync.

use super::{Entry, Hash, Kind, Message, WantFile, WireError};

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 8;
/// The oldest protocol version this build still speaks with a peer.
pub const OLDEST_PROTOCOL_VERSION: u32 = 7;
/// The longest symlink target carried (Linux's `PATH_MAX` less its NUL).
pub const MAX_LINK_TARGET: usize = 4095;
/// The first version whose wants name a version by 4 bytes of its hash
/// (`WantedHash::Short`), not 8.
const SHORT_WANTS: u32 = 8;

/// The version spoken with a peer whose hello (or announcement) says it
/// speaks `oldest` to `newest` (`newest` 0: only `oldest`), or `None` when
/// no version is spoken by both.
pub fn common_version(oldest: u32, newest: u32) -> Option<u32> {
    let spoken = PROTOCOL_VERSION.min(newest.max(oldest));
    (spoken >= OLDEST_PROTOCOL_VERSION.max(oldest)).then_some(spoken)
}

impl Message {
    /// This message as a peer speaking `version` is sent it: from 8 a
    /// want names versions by 4 bytes of their hash (half the hash bytes
    /// of a want), before it by 8.
    pub fn spoken_in(self, version: u32) -> Message {
        let name = |w: WantFile| WantFile {
            hash: if version >= SHORT_WANTS { w.hash.short() } else { w.hash.prefix() },
            ..w
        };
        match self {
            Message::Want { files } => Message::Want {
                files: files.into_iter().map(name).collect(),
            },
            other => other,
        }
    }
}

impl Entry {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{file, link};

    #[test]
    fn two_nodes_speak_the_newest_version_both_know() {
        // A node of version 7 says 6 to 7; one of 8 says 7 to 8; a future
        // node of 9 says 8 to 9; one of 6 says only 6.
        assert_eq!(common_version(6, 7), Some(7));
        assert_eq!(common_version(7, 8), Some(8));
        assert_eq!(common_version(8, 9), Some(8));
        assert_eq!(common_version(7, 0), Some(7));
        assert_eq!(common_version(6, 0), None);
        assert_eq!(common_version(9, 10), None);
        assert_eq!(common_version(5, 6), None);
    }

    fn tagged(e: Entry) -> Entry {
        Entry {
            xattrs: Some(crate::wire::Xattrs([("user.tag".to_string(), b"v".to_vec())].into())),
            ..e
        }
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
}

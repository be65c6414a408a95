//! Conflict copies: where the losing version of a concurrent edit is kept.
//!
//! Owns: the copy's name and entry, both pure functions of the losing
//! entry, so every node that holds the loser makes the identical file (same
//! path, bytes, mtime and version) and the copies never multiply. Must not:
//! decide when a copy is made (the engine does) or write it (the store does).
//!
//! `dir/report.txt` lost by device `a1b2c3d4…` with mtime 2026-11-25
//! 14:30:00 UTC and content hash `5c2e6e6d…` becomes
//! `dir/report.sync-conflict-20261125-143000-a1b2c3d4-5c2e6e6d.txt`. The
//! content's hash is in the name so that two different losers of the same
//! device and second never share one copy (found by the random workload:
//! the second was taken for "made already" and lost).

use crate::wire::version::Vector;
use crate::wire::{Entry, Kind, RelPath, MAX_COMPONENT_LEN};

const MARK: &str = ".sync-conflict-";

/// The conflict copy of `loser` (a live file), or `None` if no valid name
/// can be made.
pub fn conflict_entry(loser: &Entry) -> Option<Entry> {
    if loser.deleted || loser.kind != Kind::File {
        return None;
    }
    let tag = format!("{}-{}", loser.by.short(), loser.hash.short());
    let path = conflict_path(&loser.path, loser.mtime, &tag)?;
    let vector = if loser.by.0 == 0 {
        Vector::default()
    } else {
        Vector::single(loser.by, loser.vector.get(loser.by).max(1))
    };
    Some(Entry {
        path,
        vector,
        ..loser.clone()
    })
}

/// `stem.sync-conflict-YYYYMMDD-HHMMSS-<tag>.ext` next to `path`; the
/// time is `mtime_ns` in UTC. A name that would pass 255 bytes loses the end
/// of its stem, down to one character, and then the end of its extension:
/// every valid name has a valid copy name, the same on every node.
pub fn conflict_path(path: &RelPath, mtime_ns: i128, tag: &str) -> Option<RelPath> {
    let s = path.as_str();
    let (parent, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    // A leading dot starts a hidden name, not an extension.
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let secs = mtime_ns.div_euclid(1_000_000_000);
    // Beyond any calendar a filesystem holds (a hostile peer): the nearest.
    let secs = i64::try_from(secs).unwrap_or(if secs < 0 { -(1 << 50) } else { 1 << 50 });
    let (y, mo, d, h, mi, se) = utc(secs);
    let mark = format!("{MARK}{y:04}{mo:02}{d:02}-{h:02}{mi:02}{se:02}-{tag}");
    let (mut stem, mut ext) = (stem.to_string(), ext.to_string());
    let too_long = |stem: &str, ext: &str| stem.len() + mark.len() + ext.len() > MAX_COMPONENT_LEN;
    while too_long(&stem, &ext) && stem.chars().count() > 1 {
        stem.pop();
    }
    while too_long(&stem, &ext) && !ext.is_empty() {
        ext.pop();
    }
    let new = format!("{stem}{mark}{ext}");
    let full = match parent {
        Some(p) => format!("{p}/{new}"),
        None => new,
    };
    RelPath::new(full).ok()
}

/// What a conflict copy's name says: the name of the file it lost
/// against, when the losing version was written (UTC, `YYYYMMDD-HHMMSS`)
/// and the short id of the device that wrote it. The inverse of
/// `conflict_path`, for `dirsync conflicts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictName {
    /// The original's file name; `None` when the copy's name was shortened
    /// to fit 255 bytes, so the original's cannot be told from it.
    pub original: Option<String>,
    pub stamp: String,
    pub device: String,
    /// The first 8 hex digits of the losing content's hash (copies made
    /// before the hash joined the name have none).
    pub hash: Option<String>,
}

/// Parse a file name (no folder) made by `conflict_path`.
pub fn parse_conflict_name(name: &str) -> Option<ConflictName> {
    let at = name.rfind(MARK)?;
    let (stem, rest) = (&name[..at], &name[at + MARK.len()..]);
    let hex8 = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let (date, rest) = (rest.get(..8)?, rest.get(8..)?);
    let (time, rest) = (rest.strip_prefix('-')?.get(..6)?, rest.get(7..)?);
    if !(date.bytes().chain(time.bytes()).all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (device, rest) = (rest.strip_prefix('-')?.get(..8)?, rest.get(9..)?);
    let (hash, ext) = match rest.strip_prefix('-').and_then(|r| r.get(..8)) {
        Some(h) if hex8(h) => (Some(h.to_string()), &rest[9..]),
        _ => (None, rest),
    };
    if stem.is_empty() || !hex8(device) || !(ext.is_empty() || ext.starts_with('.')) {
        return None;
    }
    // A name within one character of the limit may have lost the end of
    // its stem (or extension) to fit.
    let shortened = name.len() + 4 > MAX_COMPONENT_LEN;
    Some(ConflictName {
        original: (!shortened).then(|| format!("{stem}{ext}")),
        stamp: format!("{date}-{time}"),
        device: device.to_string(),
        hash,
    })
}

/// Seconds since the epoch → (year, month, day, hour, minute, second), UTC
/// (Howard Hinnant's civil-from-days).
pub(crate) fn utc(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Hash, NodeId};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// 2026-11-25 14:30:00 UTC, in ns.
    const T: i128 = 1_795_617_000_000_000_000;

    #[test]
    fn names_follow_the_pattern() {
        let n = |path: &str| conflict_path(&p(path), T + 999, "a1b2c3d4").unwrap().to_string();
        assert_eq!(n("dir/report.txt"), "dir/report.sync-conflict-20261125-143000-a1b2c3d4.txt");
        assert_eq!(n("a.tar.gz"), "a.tar.sync-conflict-20261125-143000-a1b2c3d4.gz");
        assert_eq!(n("Makefile"), "Makefile.sync-conflict-20261125-143000-a1b2c3d4");
        assert_eq!(n(".bashrc"), ".bashrc.sync-conflict-20261125-143000-a1b2c3d4");
        let long = "x".repeat(250) + ".txt";
        let got = n(&long);
        assert!(got.len() <= 255 && got.ends_with("-a1b2c3d4.txt"), "{got}");
        // A long extension (issue 13: the loser used to be replaced, with
        // no copy) is shortened once the stem is down to one character.
        let long_ext = "a.".to_string() + &"e".repeat(240);
        let got = n(&long_ext);
        assert!(
            got.len() <= 255 && got.starts_with("a.sync-conflict-20261125-143000-a1b2c3d4.eee"),
            "{got}"
        );
    }

    proptest::proptest! {
        /// Every valid name has a valid copy name that differs from it and
        /// from the copy of any other time, whatever its stem, extension
        /// and multi-byte characters (a generator for the class of names
        /// that made no copy).
        #[test]
        fn every_valid_name_has_a_copy_name(
            parent in proptest::option::of("[a-z]{1,8}"),
            name in "[.]?[a-zé€😀 ._-]{1,80}(\\.[a-zé€😀]{0,200})?",
            secs in -100_000_000_000i128..100_000_000_000i128,
        ) {
            let name: String = name.chars().scan(0, |len, c| { *len += c.len_utf8(); (*len <= MAX_COMPONENT_LEN).then_some(c) }).collect();
            let full = match &parent { Some(d) => format!("{d}/{name}"), None => name.clone() };
            let Ok(path) = RelPath::new(full) else { return Ok(()) };
            let copy = conflict_path(&path, secs * 1_000_000_000, "a1b2c3d4");
            proptest::prop_assert!(copy.is_some(), "no copy name for {:?}", path);
            let copy = copy.unwrap();
            proptest::prop_assert_ne!(&copy, &path);
            proptest::prop_assert_eq!(copy.parent(), path.parent());
            let later = conflict_path(&path, (secs + 1) * 1_000_000_000, "a1b2c3d4").unwrap();
            proptest::prop_assert_ne!(copy, later);
        }
    }

    #[test]
    fn a_copy_name_tells_its_original_time_and_device() {
        let loser = Entry {
            path: p("dir/report.tar.gz"),
            kind: Kind::File,
            deleted: false,
            size: 3,
            mtime: T,
            version: T,
            hash: Hash::of(b"abc"),
            vector: Vector::default(),
            by: NodeId(0xa1b2_c3d4_0000_0001),
            exec: false,
            mode: 0,
            target: None,
            xattrs: None,
        };
        for (path, original) in [
            ("dir/report.tar.gz", "report.tar.gz"),
            ("Makefile", "Makefile"),
            (".bashrc", ".bashrc"),
        ] {
            let copy = conflict_entry(&Entry {
                path: p(path),
                ..loser.clone()
            })
            .unwrap();
            let name = copy.path.as_str().rsplit('/').next().unwrap();
            let parsed = parse_conflict_name(name).unwrap();
            assert_eq!(parsed.original.as_deref(), Some(original));
            assert_eq!((parsed.stamp.as_str(), parsed.device.as_str()), ("20261125-143000", "a1b2c3d4"));
            assert_eq!(parsed.hash, Some(loser.hash.short()));
        }
        // Older copies carry no hash; a shortened name hides its original.
        let old = parse_conflict_name("notes.sync-conflict-20261125-143000-a1b2c3d4.txt").unwrap();
        assert_eq!((old.original.as_deref(), old.hash), (Some("notes.txt"), None));
        let long = conflict_entry(&Entry {
            path: p(&("x".repeat(250) + ".txt")),
            ..loser.clone()
        })
        .unwrap();
        assert_eq!(parse_conflict_name(long.path.as_str()).unwrap().original, None);
        for not_a_copy in [
            "notes.txt",
            ".sync-conflict-20261125-143000-a1b2c3d4.txt",
            "n.sync-conflict-2026112-143000-a1b2c3d4.txt",
            "n.sync-conflict-20261125-143000-a1b2c3dz.txt",
            "n.sync-conflict-20261125-143000-a1b2c3d4x",
        ] {
            assert_eq!(parse_conflict_name(not_a_copy), None, "{not_a_copy}");
        }
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(utc((T / 1_000_000_000) as i64), (2026, 11, 25, 14, 30, 0));
        assert_eq!(utc(-1), (1969, 12, 31, 23, 59, 59));
    }

    #[test]
    fn the_copy_is_a_pure_function_of_the_loser() {
        let dev = NodeId(0xa1b2_c3d4_0000_0001);
        let loser = Entry {
            path: p("report.txt"),
            kind: Kind::File,
            deleted: false,
            size: 3,
            mtime: T,
            version: T + 1,
            hash: Hash::of(b"abc"),
            vector: Vector::single(dev, 77).bump(NodeId(5), 3),
            by: dev,
            exec: false,
            mode: 0,
            target: None,
            xattrs: None,
        };
        let c = conflict_entry(&loser).unwrap();
        assert_eq!(c, conflict_entry(&loser.clone()).unwrap());
        let tag = loser.hash.short();
        assert_eq!(c.path.as_str(), format!("report.sync-conflict-20261125-143000-a1b2c3d4-{tag}.txt"));
        // Another loser of the same device and second gets its own copy.
        let other = Entry {
            hash: Hash::of(b"xyz"),
            ..loser.clone()
        };
        assert_ne!(conflict_entry(&other).unwrap().path, c.path);
        assert_eq!((c.size, c.mtime, c.version, c.hash, c.by), (3, T, T + 1, loser.hash, dev));
        assert_eq!(c.vector, Vector::single(dev, 77));
        let tomb = Entry { deleted: true, ..loser };
        assert_eq!(conflict_entry(&tomb), None);
    }
}

//! The trash can: a file that a peer's change deletes or replaces is moved
//! to `DIR/.dirsync/trash/` first (a rename on the same filesystem, or a
//! hard link when the file is replaced in place), so a `rm -rf` that
//! reached every host by design can still be undone on each of them. Kept
//! for `--trash-days` (0: no trash), never synced.
//!
//! What it keeps is bounded two ways. Per file, the last version replaced
//! or deleted (as Syncthing's trash can): a log appended to every few
//! milliseconds left a thousand versions of itself, quadratic in its size.
//! In all, `--trash-max` (5% of the filesystem by default): past it the
//! oldest go first, and a file larger than the bound on its own is not
//! kept. Sizes count allocated blocks, so a sparse file costs what it holds.
//!
//! A kept file is `trash/<folders>/<stem>~<YYYYMMDD-HHMMSS>[-n]<.ext>`: its
//! original path with the time it was trashed (UTC) before the extension,
//! as Syncthing's trash can names them.
//!
//! Owns: the trash folder. Must not: decide what is trashed (the store
//! trashes what it deletes or replaces for a peer).

use crate::wire::{RelPath, STATE_DIR_NAME};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::{debug, warn};

/// The trash folder's name in `DIR/.dirsync`.
pub const TRASH_DIR: &str = "trash";
const DAY_NS: i128 = 86_400 * 1_000_000_000;

/// The bound on the whole trash (`--trash-max`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrashMax {
    /// A share of the filesystem DIR is on, in percent.
    Percent(f64),
    Bytes(u64),
}

impl Default for TrashMax {
    fn default() -> Self {
        TrashMax::Percent(5.0)
    }
}

impl std::str::FromStr for TrashMax {
    type Err = String;
    /// `5%`, `0.5%`, or a size: `2GiB`, `500MB`.
    fn from_str(text: &str) -> Result<TrashMax, String> {
        let bad = || format!("{text:?} is not a trash bound: give a share of the filesystem like 5% or a size like 2GiB");
        if let Some(p) = text.trim().strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            return match p > 0.0 && p <= 100.0 {
                true => Ok(TrashMax::Percent(p)),
                false => Err(bad()),
            };
        }
        if text.contains('/') || text.contains("bit") {
            return Err(bad());
        }
        crate::transport::rate::parse_rate(text).map(TrashMax::Bytes).map_err(|_| bad())
    }
}

impl TrashMax {
    /// The bound in bytes for a trash in `dir` (on a filesystem that
    /// cannot be measured: no bound but the per-file one).
    fn bytes(self, dir: &Path) -> u64 {
        match self {
            TrashMax::Bytes(b) => b,
            TrashMax::Percent(p) => filesystem_size(dir).map_or(u64::MAX, |size| (size as f64 * p / 100.0) as u64),
        }
    }
}

/// The size of the filesystem holding `dir` (or its nearest existing
/// ancestor).
fn filesystem_size(dir: &Path) -> Option<u64> {
    let st = super::special::statfs(dir.ancestors().find(|a| a.exists())?)?;
    Some(st.f_blocks.saturating_mul(u64::try_from(st.f_frsize).ok()?))
}

/// The disk space a file takes (its allocated blocks: a sparse file's
/// holes cost nothing).
fn allocated(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512)
}

/// Where and for how long trashed files are kept, and the clock that
/// stamps them (the node's, so the simulation's time in the simulation).
#[derive(Clone)]
pub struct Trash {
    dir: PathBuf,
    days: u32,
    /// The bound on the whole trash, in bytes.
    max_bytes: u64,
    clock: Arc<dyn Fn() -> i128 + Send + Sync>,
    /// Bytes in the trash: counted at each prune, added to at each keep.
    bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Trash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trash").field("dir", &self.dir).field("days", &self.days).finish()
    }
}

/// One trashed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trashed {
    /// Where it was in DIR.
    pub original: String,
    /// When it was trashed, `YYYYMMDD-HHMMSS` UTC.
    pub trashed: String,
    pub size: u64,
    /// The disk space it takes.
    #[serde(skip)]
    pub allocated: u64,
    /// Where it is now.
    pub path: PathBuf,
}

/// The trash folder of synced directory `root`.
pub fn trash_dir(root: &Path) -> PathBuf {
    root.join(STATE_DIR_NAME).join(TRASH_DIR)
}

impl Trash {
    /// The trash of `root`, keeping files `days` days (0: none kept) and
    /// at most `max` in all. Its size is counted by the first `prune`.
    pub fn new(root: &Path, days: u32, max: TrashMax, clock: Arc<dyn Fn() -> i128 + Send + Sync>) -> Trash {
        let dir = trash_dir(root);
        Trash {
            max_bytes: max.bytes(&dir),
            dir,
            days,
            clock,
            bytes: Arc::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.days > 0
    }

    /// Where `rel`, trashed now, is kept: a free name.
    fn place_for(&self, rel: &RelPath) -> PathBuf {
        let stamp = stamp((self.clock)());
        let name = rel.file_name();
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        // Room for `~stamp-nn`: a name near the 255-byte limit loses the
        // end of its stem (found by the workload: the trash refused it).
        let room = crate::wire::MAX_COMPONENT_LEN.saturating_sub(ext.len() + 1 + stamp.len() + 4);
        let mut stem = stem.to_string();
        while stem.len() > room {
            stem.pop();
        }
        let parent = rel.parent().map_or(self.dir.clone(), |p| p.to_fs(&self.dir));
        let mut n = 0;
        loop {
            let suffix = if n == 0 { String::new() } else { format!("-{n}") };
            let candidate = parent.join(format!("{stem}~{stamp}{suffix}{ext}"));
            if fs::symlink_metadata(&candidate).is_err() {
                return candidate;
            }
            n += 1;
        }
    }

    /// Move file `full` (at `rel`) into the trash, for a delete. False if
    /// it could not be kept (the caller deletes it all the same).
    pub fn keep_moved(&self, full: &Path, rel: &RelPath) -> bool {
        self.keep(full, rel, |from, to| fs::rename(from, to))
    }

    /// Keep a link to file `full` (at `rel`) in the trash, for a file about
    /// to be replaced in place (the rename over it stays atomic).
    pub fn keep_linked(&self, full: &Path, rel: &RelPath) -> bool {
        self.keep(full, rel, |from, to| fs::hard_link(from, to))
    }

    fn keep(&self, full: &Path, rel: &RelPath, how: impl Fn(&Path, &Path) -> io::Result<()>) -> bool {
        if !self.enabled() {
            return false;
        }
        let size = fs::symlink_metadata(full).map_or(0, |m| allocated(&m));
        if size > self.max_bytes {
            debug!(path = %rel, size, max = self.max_bytes, "larger than the whole trash may be; not kept");
            return false;
        }
        let to = self.place_for(rel);
        let made = to.parent().map_or(Ok(()), fs::create_dir_all).and_then(|()| how(full, &to));
        match made {
            Ok(()) => {
                debug!(path = %rel, kept = %to.display(), "moved to the trash");
                self.bytes.fetch_add(size, Ordering::Relaxed);
                self.forget_older_versions(rel, &to);
                if self.size() > self.max_bytes {
                    self.prune();
                }
                true
            }
            Err(e) => {
                warn!(path = %rel, error = %e, "could not keep the file in the trash");
                false
            }
        }
    }

    /// Only the version just kept at `kept` stays of `rel`: the ones kept
    /// before it go.
    fn forget_older_versions(&self, rel: &RelPath, kept: &Path) {
        let Some(folder) = kept.parent() else { return };
        let Ok(entries) = fs::read_dir(folder) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path == kept {
                continue;
            }
            let same = path
                .strip_prefix(&self.dir)
                .ok()
                .and_then(|r| r.to_str())
                .and_then(original_of)
                .is_some_and(|(original, _)| original == rel.as_str());
            if !same {
                continue;
            }
            let size = fs::symlink_metadata(&path).map_or(0, |m| allocated(&m));
            if fs::remove_file(&path).is_ok() {
                let _ = self
                    .bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(size)));
            }
        }
    }

    /// Remove what was trashed more than `days` days ago, then the oldest
    /// until the trash is within its bound. Returns how many files went.
    pub fn prune(&self) -> usize {
        let now = (self.clock)();
        let cutoff = if self.enabled() {
            now - i128::from(self.days) * DAY_NS
        } else {
            i128::MAX
        };
        let mut kept = Vec::new();
        let mut removed = 0;
        for t in list(&self.dir) {
            if parse_stamp(&t.trashed).is_some_and(|at| at < cutoff) && fs::remove_file(&t.path).is_ok() {
                removed += 1;
            } else {
                kept.push(t);
            }
        }
        // Oldest first (`list`'s order): the newest stay.
        let mut kept_bytes: u64 = kept.iter().map(|t| t.allocated).sum();
        for t in &kept {
            if kept_bytes <= self.max_bytes {
                break;
            }
            if fs::remove_file(&t.path).is_ok() {
                removed += 1;
                kept_bytes -= t.allocated;
            }
        }
        remove_empty_folders(&self.dir);
        self.bytes.store(kept_bytes, Ordering::Relaxed);
        removed
    }

    /// Bytes in the trash (as of the last prune, plus what came since).
    pub fn size(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// What the trash folder `dir` holds, oldest first.
pub fn list(dir: &Path) -> Vec<Trashed> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let Some((original, trashed)) = path.strip_prefix(dir).ok().and_then(|r| r.to_str()).and_then(original_of) else {
                continue;
            };
            out.push(Trashed {
                original,
                trashed,
                size: meta.len(),
                allocated: allocated(&meta),
                path,
            });
        }
    }
    out.sort_by(|a, b| (&a.trashed, &a.original).cmp(&(&b.trashed, &b.original)));
    out
}

/// Why a kept version cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}: not a version the trash keeps")]
    NotKept(String),
    #[error("{0} is there now: move it away first (or copy the kept version by hand)")]
    Occupied(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Put the kept version `kept` (a path the trash of `root` lists) back
/// where it was, as a copy (the trash keeps it until it expires), if
/// nothing is there now. Written in the trash folder (inside DIR, so on
/// its filesystem, and never synced) and renamed in: a running node sees
/// a whole new file, made now, which wins over what replaced it and syncs
/// like any other. Returns the path it is at, relative to `root`.
pub fn restore(root: &Path, kept: &Path) -> Result<String, RestoreError> {
    let shown = kept.display().to_string();
    let found = list(&trash_dir(root)).into_iter().find(|t| t.path == kept);
    let Some(t) = found else {
        return Err(RestoreError::NotKept(shown));
    };
    let rel = RelPath::new(t.original.clone()).map_err(|_| RestoreError::NotKept(shown))?;
    let target = rel.to_fs(root);
    if fs::symlink_metadata(&target).is_ok() {
        return Err(RestoreError::Occupied(t.original));
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RestoreError::Io { path, source }
    };
    let parent = target.parent().unwrap_or(root);
    fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = trash_dir(root).join(format!(".restoring-{}", std::process::id()));
    fs::copy(&t.path, &tmp).map_err(io(&tmp))?;
    // Not over something that came meanwhile.
    if fs::symlink_metadata(&target).is_ok() {
        let _ = fs::remove_file(&tmp);
        return Err(RestoreError::Occupied(t.original));
    }
    fs::rename(&tmp, &target).map_err(io(&target))?;
    Ok(t.original)
}

/// `dir/notes~20261201-235000-1.txt` → (`dir/notes.txt`, `20261201-235000`).
fn original_of(kept: &str) -> Option<(String, String)> {
    let (head, name) = match kept.rsplit_once('/') {
        Some((h, n)) => (Some(h), n),
        None => (None, kept),
    };
    let tilde = name.rfind('~')?;
    let (stem, rest) = (&name[..tilde], &name[tilde + 1..]);
    let stamp = rest.get(..15)?;
    parse_stamp(stamp)?;
    let rest = &rest[15..];
    // An optional `-n` before the extension.
    let ext = match rest.strip_prefix('-') {
        Some(r) => &r[r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())..],
        None => rest,
    };
    let name = format!("{stem}{ext}");
    let original = match head {
        Some(h) => format!("{h}/{name}"),
        None => name,
    };
    Some((original, stamp.to_string()))
}

/// `ns` since the epoch as `YYYYMMDD-HHMMSS` (UTC).
fn stamp(ns: i128) -> String {
    let secs = i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0);
    let (y, mo, d, h, mi, s) = crate::engine::conflict::utc(secs);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// The inverse of `stamp`, in ns.
fn parse_stamp(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() != 15 || b[8] != b'-' || !s[..8].bytes().chain(s[9..].bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(4..6)?, n(6..8)?, n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from civil (Howard Hinnant), the inverse of `utc`.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(i128::from(days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000)
}

/// Remove the empty folders under `dir` (not `dir` itself).
fn remove_empty_folders(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            remove_empty_folders(&p);
            let _ = fs::remove_dir(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    #[test]
    fn stamps_round_trip_and_names_give_back_the_original() {
        let t = 1_795_617_000 * 1_000_000_000i128;
        assert_eq!(stamp(t), "20261125-143000");
        assert_eq!(parse_stamp("20261125-143000"), Some(t));
        assert_eq!(
            original_of("d/notes~20261125-143000.txt"),
            Some(("d/notes.txt".into(), "20261125-143000".into()))
        );
        assert_eq!(original_of("a~b~20261125-143000-2"), Some(("a~b".into(), "20261125-143000".into())));
        assert_eq!(original_of("notes.txt"), None);
    }

    fn clock_at(secs: i64) -> (Arc<AtomicI64>, Arc<dyn Fn() -> i128 + Send + Sync>) {
        let now = Arc::new(AtomicI64::new(secs));
        let read = now.clone();
        (now, Arc::new(move || i128::from(read.load(Ordering::Relaxed)) * 1_000_000_000))
    }

    #[test]
    fn a_kept_version_is_restored_where_nothing_is_now() {
        let d = tempfile::tempdir().unwrap();
        let (_, clock) = clock_at(1_795_617_000);
        let trash = Trash::new(d.path(), 2, TrashMax::default(), clock);
        let full = d.path().join("sub/report.txt");
        fs::create_dir_all(d.path().join("sub")).unwrap();
        fs::write(&full, b"old").unwrap();
        assert!(trash.keep_moved(&full, &RelPath::new("sub/report.txt").unwrap()));
        let kept = list(&trash_dir(d.path())).remove(0).path;
        fs::write(&full, b"new").unwrap();
        assert!(matches!(restore(d.path(), &kept), Err(RestoreError::Occupied(p)) if p == "sub/report.txt"));
        fs::remove_file(&full).unwrap();
        fs::remove_dir(d.path().join("sub")).unwrap();
        assert_eq!(restore(d.path(), &kept).unwrap(), "sub/report.txt");
        assert_eq!(fs::read(&full).unwrap(), b"old");
        assert!(kept.exists(), "the trash keeps it");
        assert_eq!(list(&trash_dir(d.path())).len(), 1, "no temp file left");
        let outside = d.path().join("sub/report.txt");
        assert!(matches!(restore(d.path(), &outside), Err(RestoreError::NotKept(_))));
    }

    #[test]
    fn kept_files_are_listed_and_pruned_by_age() {
        let d = tempfile::tempdir().unwrap();
        let (now, clock) = clock_at(1_795_617_000);
        let trash = Trash::new(d.path(), 2, TrashMax::default(), clock);
        let full = d.path().join("report.txt");
        fs::write(&full, b"old").unwrap();
        assert!(trash.keep_moved(&full, &RelPath::new("sub/report.txt").unwrap()));
        assert!(!full.exists());
        fs::write(&full, b"again").unwrap();
        assert!(trash.keep_linked(&full, &RelPath::new("sub/other.txt").unwrap()));
        assert!(full.exists());
        let kept = list(&trash_dir(d.path()));
        let originals: Vec<_> = kept.iter().map(|k| k.original.as_str()).collect();
        assert_eq!(originals, ["sub/other.txt", "sub/report.txt"]);
        assert_eq!(trash.size(), kept.iter().map(|k| k.allocated).sum::<u64>());
        // Two days later nothing goes; three, everything.
        now.fetch_add(2 * 86_400, Ordering::Relaxed);
        assert_eq!(trash.prune(), 0);
        now.fetch_add(86_400, Ordering::Relaxed);
        assert_eq!(trash.prune(), 2);
        assert!(list(&trash_dir(d.path())).is_empty());
        assert_eq!(trash.size(), 0);
        // A name at the length limit still fits with its stamp.
        let long = RelPath::new(format!("{}.txt", "l".repeat(250))).unwrap();
        fs::write(d.path().join("long"), b"x").unwrap();
        assert!(trash.keep_moved(&d.path().join("long"), &long));
        assert!(list(&trash_dir(d.path()))[0].original.starts_with("lll"));
        // Off: nothing kept.
        let off = Trash::new(d.path(), 0, TrashMax::default(), Arc::new(|| 0));
        assert!(!off.keep_moved(&full, &RelPath::new("report.txt").unwrap()));
        assert!(full.exists());
    }

    /// Issue 26, item 6: a log appended every 20 ms left 1,495 versions of
    /// itself in the trash (1.1 GB for 1.5 MB of log). One version per file
    /// stays: the last one replaced.
    #[test]
    fn only_the_last_replaced_version_of_a_file_stays() {
        let d = tempfile::tempdir().unwrap();
        let (now, clock) = clock_at(1_795_617_000);
        let trash = Trash::new(d.path(), 7, TrashMax::default(), clock);
        let rel = RelPath::new("logs/app.log").unwrap();
        let full = d.path().join("app.log");
        let mut log = Vec::new();
        for i in 0..50 {
            log.extend_from_slice(format!("line {i}\n").as_bytes());
            fs::write(&full, &log).unwrap();
            assert!(trash.keep_moved(&full, &rel));
            // Some in the same second (a `-n` name), some later.
            now.fetch_add(i % 2, Ordering::Relaxed);
        }
        let kept = list(&trash_dir(d.path()));
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(fs::read(&kept[0].path).unwrap(), log, "the last version stays");
        assert_eq!(trash.size(), kept[0].allocated);
    }

    /// The whole trash stays within its bound: the oldest go first, and a
    /// file larger than the bound on its own is not kept.
    #[test]
    fn the_trash_keeps_the_newest_within_its_bound() {
        let d = tempfile::tempdir().unwrap();
        let (now, clock) = clock_at(1_795_617_000);
        let block = 64 * 1024;
        let trash = Trash::new(d.path(), 7, TrashMax::Bytes(5 * block / 2), clock);
        let full = d.path().join("f");
        let keep = |name: &str, len: usize| {
            fs::write(&full, vec![7u8; len]).unwrap();
            trash.keep_moved(&full, &RelPath::new(name).unwrap())
        };
        for name in ["first", "second", "third"] {
            assert!(keep(name, block as usize));
            now.fetch_add(60, Ordering::Relaxed);
        }
        let originals: Vec<_> = list(&trash_dir(d.path())).into_iter().map(|k| k.original).collect();
        assert_eq!(originals, ["second", "third"], "the oldest went");
        assert!(trash.size() <= 5 * block / 2);
        assert!(!keep("huge", 3 * block as usize), "larger than the bound: not kept");
        assert!(full.exists(), "not kept means left where it is, for the caller");
    }

    #[test]
    fn trash_bounds_parse_as_shares_or_sizes() {
        assert_eq!("5%".parse::<TrashMax>(), Ok(TrashMax::Percent(5.0)));
        assert_eq!("0.5%".parse::<TrashMax>(), Ok(TrashMax::Percent(0.5)));
        assert_eq!("2GiB".parse::<TrashMax>(), Ok(TrashMax::Bytes(2 << 30)));
        assert_eq!("500MB".parse::<TrashMax>(), Ok(TrashMax::Bytes(500_000_000)));
        for bad in ["", "0%", "101%", "x%", "5MB/s", "8Mbit", "lots", "0"] {
            assert!(bad.parse::<TrashMax>().is_err(), "{bad:?} accepted");
        }
        let d = tempfile::tempdir().unwrap();
        let five = TrashMax::Percent(5.0).bytes(d.path());
        assert!(five > 0 && five < u64::MAX, "5% of a real filesystem: {five}");
    }
}

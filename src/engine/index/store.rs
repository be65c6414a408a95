//! The index in an embedded database (redb: pure Rust, ACID, one file; the
//! comparison with the alternatives is in docs/ARCHITECTURE.md), seen by
//! the engine through a narrow, synchronous interface. Changes collect in
//! memory (`pending`) and reach the database in one transaction per
//! `commit`, which the node calls every two seconds, and which happens at
//! once when 8192 changes wait: many changes per durable commit, never a
//! rewrite of everything. Reads look at the pending changes first, then at the last
//! committed snapshot, so the engine sees every change at once, and what
//! it reads is the same in a test, a simulation and production.
//!
//! Besides the entries, the database keeps:
//! - a sequence number per change, from a counter of this index, and the
//!   path each number last changed (`since`: what changed after a point,
//!   for the incremental index exchange);
//! - live files by content hash (local copies and renames);
//! - the digest sums of every folder (`digest.rs`);
//! - per peer device, how far its index has been taken (`PeerMark`);
//! - the index's identity, random at creation: a wiped state directory is
//!   a new identity, and its peers send it everything.
//!
//! Owns: the database's tables and their consistency. Must not: decide
//! anything about sync. A database that fails to read or write is a
//! failure the node stops on (`failure`), never an empty answer it acts
//! on silently.

use super::codec::{decode, encode, Stored};
use super::digest::DirSum;
use crate::engine::ignore::IgnoreRules;
use crate::engine::{Known, Stat};
use crate::wire::{Entry, Hash, Kind, NodeId, RelPath};
use redb::{Database, Durability, ReadOnlyTable, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::OnceLock;
use tracing::error;

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const SEQS: TableDefinition<u64, &str> = TableDefinition::new("seqs");
/// Key: content hash then path; no value.
const HASHES: TableDefinition<&[u8], ()> = TableDefinition::new("hashes");
/// Key: folder path ("" for the root); value: `DirSum::encode`.
const DIRS: TableDefinition<&str, &[u8]> = TableDefinition::new("dirs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key: a peer's device id; value: `PeerMark::encode`.
const PEERS: TableDefinition<u64, &[u8]> = TableDefinition::new("peers");

/// The database's cache. The index is read in key order and mostly near
/// what changed: a small cache keeps the resident size flat in the size of
/// the tree (issue: a million files in 64 MiB).
const CACHE_BYTES: usize = 16 << 20;

/// Pending changes at which the index commits at once rather than at the
/// node's next save: bounds the memory a large scan or an initial sync
/// holds uncommitted (a crash then loses less, too).
const COMMIT_AT: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("index database: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Db(e.to_string())
}

/// How far this node has taken a peer's index: everything of the peer's
/// index `identity` up to `seq` is settled here, as judged under our own
/// index identity `ours` (other ignore rules here: start over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerMark {
    pub identity: u64,
    pub seq: u64,
    pub ours: u64,
}

impl PeerMark {
    fn encode(&self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..8].copy_from_slice(&self.identity.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..].copy_from_slice(&self.ours.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<PeerMark> {
        let word = |i: usize| Some(u64::from_le_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        (b.len() == 24).then_some(())?;
        Some(PeerMark {
            identity: word(0)?,
            seq: word(1)?,
            ours: word(2)?,
        })
    }
}

/// Counters kept in the `META` table.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    identity: u64,
    next_seq: u64,
    entries: u64,
    live_files: u64,
    live_bytes: u64,
    /// The ignore rules the folder sums leave out (`rules_key`).
    sums_rules: u64,
}

const META_KEYS: [&str; 6] = ["identity", "next_seq", "entries", "live_files", "live_bytes", "sums_rules"];
/// 1 once the index was closed cleanly (`Index::close`), 0 while it is open.
const CLEAN: &str = "clean";

impl Meta {
    fn values(&self) -> [u64; 6] {
        [
            self.identity,
            self.next_seq,
            self.entries,
            self.live_files,
            self.live_bytes,
            self.sums_rules,
        ]
    }
}

/// A path changed since the last commit.
#[derive(Debug, Clone)]
struct Change {
    stored: Stored,
    /// What the committed snapshot holds for the path: its keys in `SEQS`
    /// and `HASHES` go at the commit.
    was: Option<(u64, Option<Hash>)>,
}

/// The tables of the last committed state.
struct Snapshot {
    entries: ReadOnlyTable<&'static str, &'static [u8]>,
    seqs: ReadOnlyTable<u64, &'static str>,
    hashes: ReadOnlyTable<&'static [u8], ()>,
    dirs: ReadOnlyTable<&'static str, &'static [u8]>,
    peers: ReadOnlyTable<u64, &'static [u8]>,
}

pub struct Index {
    db: Database,
    snapshot: Snapshot,
    durability: Durability,
    meta: Meta,
    pending: BTreeMap<RelPath, Change>,
    pending_seqs: BTreeMap<u64, RelPath>,
    /// Live files added since the commit, by hash (entries they no longer
    /// hold are filtered out on lookup).
    pending_hashes: HashMap<Hash, BTreeSet<RelPath>>,
    pending_dirs: BTreeMap<String, DirSum>,
    pending_marks: BTreeMap<NodeId, PeerMark>,
    /// The folder sums were recomputed (other ignore rules): the committed
    /// ones are stale and replaced at the commit.
    dirs_reset: bool,
    /// Paths left out of the digest sums (ignored here).
    ignore: IgnoreRules,
    failure: OnceLock<String>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("entries", &self.meta.entries)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Default for Index {
    /// An empty index in memory (tests and fuzzing).
    fn default() -> Self {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database needs no disk");
        Index::over(db, Durability::None, 1).expect("an in-memory database needs no disk")
    }
}

impl Index {
    /// Open the index at `path`, creating it (with a new random identity)
    /// when it does not exist. Returns the index and whether it existed.
    pub fn open(path: &Path) -> Result<(Index, bool), IndexError> {
        let existed = path.exists();
        let open_err = |e: &dyn std::fmt::Display| IndexError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| open_err(&e))?;
        let mut fresh = [0u8; 8];
        getrandom::fill(&mut fresh).map_err(|e| open_err(&e))?;
        let index = Index::over(db, Durability::Immediate, u64::from_le_bytes(fresh).max(1)).map_err(|e| open_err(&e))?;
        Ok((index, existed))
    }

    fn over(db: Database, durability: Durability, fresh_identity: u64) -> Result<Index, IndexError> {
        // Every table exists from the first commit on: a read of a missing
        // table would be an error.
        let txn = db.begin_write().map_err(db_err)?;
        let mut meta = Meta::default();
        {
            txn.open_table(ENTRIES).map_err(db_err)?;
            txn.open_table(SEQS).map_err(db_err)?;
            txn.open_table(HASHES).map_err(db_err)?;
            txn.open_table(DIRS).map_err(db_err)?;
            txn.open_table(PEERS).map_err(db_err)?;
            let mut t = txn.open_table(META).map_err(db_err)?;
            let mut values = [0u64; 6];
            for (v, key) in values.iter_mut().zip(META_KEYS) {
                *v = t.get(key).map_err(db_err)?.map_or(0, |g| g.value());
            }
            [
                meta.identity,
                meta.next_seq,
                meta.entries,
                meta.live_files,
                meta.live_bytes,
                meta.sums_rules,
            ] = values;
            let clean = t.get(CLEAN).map_err(db_err)?.is_some_and(|g| g.value() == 1);
            if meta.identity == 0 {
                meta.next_seq = 1;
            }
            if meta.identity == 0 || !clean {
                // After a crash, the sequence numbers of changes that were
                // never committed are given out again, to other changes: a
                // peer that heard the lost ones must not take the new ones
                // as known. A new identity makes every peer send us, and
                // take from us, everything once.
                meta.identity = fresh_identity;
            }
            for (key, v) in META_KEYS.iter().zip(meta.values()) {
                t.insert(*key, v).map_err(db_err)?;
            }
            t.insert(CLEAN, 0).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let snapshot = Self::snapshot(&db)?;
        Ok(Index {
            db,
            snapshot,
            durability,
            meta,
            pending: BTreeMap::new(),
            pending_seqs: BTreeMap::new(),
            pending_hashes: HashMap::new(),
            pending_dirs: BTreeMap::new(),
            pending_marks: BTreeMap::new(),
            dirs_reset: false,
            ignore: IgnoreRules::default(),
            failure: OnceLock::new(),
        })
    }

    fn snapshot(db: &Database) -> Result<Snapshot, IndexError> {
        let r = db.begin_read().map_err(db_err)?;
        Ok(Snapshot {
            entries: r.open_table(ENTRIES).map_err(db_err)?,
            seqs: r.open_table(SEQS).map_err(db_err)?,
            hashes: r.open_table(HASHES).map_err(db_err)?,
            dirs: r.open_table(DIRS).map_err(db_err)?,
            peers: r.open_table(PEERS).map_err(db_err)?,
        })
    }

    /// The first read or write that failed: the node stops on it.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    fn fail(&self, what: impl std::fmt::Display) {
        let what = what.to_string();
        error!(error = %what, "the index database failed");
        let _ = self.failure.set(what);
    }

    /// This index's identity: new when the state directory is new.
    pub fn identity(&self) -> u64 {
        self.meta.identity
    }

    /// The sequence number of the latest change.
    pub fn seq(&self) -> u64 {
        self.meta.next_seq.saturating_sub(1)
    }

    /// Changes not yet committed.
    fn uncommitted(&self) -> usize {
        self.pending.len() + self.pending_marks.len() + usize::from(self.dirs_reset)
    }

    fn stored(&self, path: &RelPath) -> Option<Stored> {
        if let Some(c) = self.pending.get(path) {
            return Some(c.stored.clone());
        }
        match self.snapshot.entries.get(path.as_str()) {
            Ok(Some(v)) => match decode(path.clone(), v.value()) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.fail(format!("entry {path}: {e}"));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    pub fn get(&self, path: &RelPath) -> Option<Entry> {
        self.stored(path).map(|s| s.entry)
    }

    /// The live (not deleted) entry at `path`.
    pub fn live(&self, path: &RelPath) -> Option<Entry> {
        self.get(path).filter(|e| !e.deleted)
    }

    fn counts(&self, e: &Entry) -> bool {
        !self.ignore.is_ignored(&e.path, e.kind == Kind::Dir)
    }

    /// The folders whose sums cover `path`: the root ("") and each folder
    /// above it.
    fn dirs_of(path: &RelPath) -> impl Iterator<Item = &str> {
        let s = path.as_str();
        std::iter::once("").chain(s.match_indices('/').map(move |(i, _)| &s[..i]))
    }

    fn dir_sum(&self, dir: &str) -> DirSum {
        if let Some(s) = self.pending_dirs.get(dir) {
            return *s;
        }
        if self.dirs_reset {
            return DirSum::default();
        }
        match self.snapshot.dirs.get(dir) {
            Ok(Some(v)) => DirSum::decode(v.value()).unwrap_or_else(|| {
                self.fail(format!("folder sum {dir:?} is damaged"));
                DirSum::default()
            }),
            Ok(None) => DirSum::default(),
            Err(e) => {
                self.fail(e);
                DirSum::default()
            }
        }
    }

    fn adjust_sums(&mut self, e: &Entry, add: bool) {
        if !self.counts(e) {
            return;
        }
        for dir in Self::dirs_of(&e.path) {
            let mut sum = self.dir_sum(dir);
            if add {
                sum.add(e);
            } else {
                sum.remove(e);
            }
            self.pending_dirs.insert(dir.to_string(), sum);
        }
    }

    /// What the index knows of `path`, for a scan: its entry and the
    /// file's `Stat` when this node last looked at it.
    pub fn known(&self, path: &RelPath) -> Option<Known> {
        self.stored(path).map(|s| (s.entry, s.stat))
    }

    /// Record that the file at `path`, unchanged, now shows `stat` (a file
    /// received since it was last looked at, or whose inode changed with
    /// the same content): no new version, nothing to send.
    pub fn set_stat(&mut self, path: &RelPath, stat: Option<Stat>) {
        let Some(mut stored) = self.stored(path) else { return };
        if stored.stat == stat {
            return;
        }
        stored.stat = stat;
        let was = match self.pending.get(path) {
            Some(c) => c.was,
            None => Some((stored.seq, live_file_hash(&stored.entry))),
        };
        self.pending.insert(path.clone(), Change { stored, was });
        self.commit_if_full();
    }

    /// `entry` replaces what the index holds at its path; `stat` is the
    /// file's when this node looked at it (`None`: it did not, e.g. a file
    /// received, whose next look records it).
    pub fn insert_seen(&mut self, entry: Entry, stat: Option<Stat>) {
        let old = self.stored(&entry.path);
        let seq = self.meta.next_seq;
        self.meta.next_seq += 1;
        let was = match self.pending.get(&entry.path) {
            Some(c) => {
                self.pending_seqs.remove(&c.stored.seq);
                c.was
            }
            None => old.as_ref().map(|o| (o.seq, live_file_hash(&o.entry))),
        };
        match &old {
            Some(o) => {
                self.adjust_sums(&o.entry, false);
                if live_file_hash(&o.entry).is_some() {
                    self.meta.live_files = self.meta.live_files.wrapping_sub(1);
                    self.meta.live_bytes = self.meta.live_bytes.wrapping_sub(o.entry.size);
                }
            }
            None => self.meta.entries += 1,
        }
        self.adjust_sums(&entry, true);
        if let Some(h) = live_file_hash(&entry) {
            self.meta.live_files = self.meta.live_files.wrapping_add(1);
            self.meta.live_bytes = self.meta.live_bytes.wrapping_add(entry.size);
            self.pending_hashes.entry(h).or_default().insert(entry.path.clone());
        }
        self.pending_seqs.insert(seq, entry.path.clone());
        let path = entry.path.clone();
        self.pending.insert(
            path,
            Change {
                stored: Stored { entry, seq, stat },
                was,
            },
        );
        self.commit_if_full();
    }

    /// `entry` replaces what the index holds at its path (a version this
    /// node did not look at on its disk: see `insert_seen`).
    pub fn insert(&mut self, entry: Entry) {
        self.insert_seen(entry, None);
    }

    fn commit_if_full(&mut self) {
        if self.pending.len() >= COMMIT_AT && self.failure().is_none() {
            if let Err(e) = self.commit() {
                self.fail(e);
            }
        }
    }

    /// A live file holding content `hash`, if any (a source for a local
    /// copy or rename): the first that still holds it of those changed
    /// since the last commit, then of the committed ones in path order.
    /// Lazy: ten thousand empty files share one hash.
    pub fn live_file_with_hash(&self, hash: &Hash) -> Option<Entry> {
        let holds = |p: &RelPath| self.live(p).filter(|e| e.kind == Kind::File && e.hash == *hash);
        if let Some(e) = self.pending_hashes.get(hash).into_iter().flatten().find_map(holds) {
            return Some(e);
        }
        let lo: &[u8] = &hash.0;
        let range = match self.snapshot.hashes.range::<&[u8]>(lo..) {
            Ok(range) => range,
            Err(e) => {
                self.fail(e);
                return None;
            }
        };
        for item in range {
            let key = match item {
                Ok((k, _)) => k.value().to_vec(),
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            };
            if !key.starts_with(&hash.0) {
                return None;
            }
            match std::str::from_utf8(&key[32..]).ok().and_then(|p| RelPath::new(p).ok()) {
                Some(p) => {
                    if let Some(e) = holds(&p) {
                        return Some(e);
                    }
                }
                None => self.fail("a damaged key in the hash table"),
            }
        }
        None
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = Entry> + '_> {
        self.under(None)
    }

    /// Entries at `dir` and below it (everything when `dir` is `None`), in
    /// path order, in O(log n) plus what it yields: the paths below `d` are
    /// one range (siblings such as `d.txt` sort between `d` and `d/`).
    pub fn under<'a>(&'a self, dir: Option<&RelPath>) -> Box<dyn Iterator<Item = Entry> + 'a> {
        match dir {
            Some(d) => {
                let (lo, hi) = d.below_bounds();
                let below = self.range(Bound::Included(lo), Bound::Excluded(hi));
                Box::new(self.get(d).into_iter().chain(below))
            }
            None => self.range(Bound::Unbounded, Bound::Unbounded),
        }
    }

    /// Every entry after path `after` (all of them for `None`), in path
    /// order.
    pub fn after(&self, after: Option<&RelPath>) -> Box<dyn Iterator<Item = Entry> + '_> {
        match after {
            Some(p) => self.range(Bound::Excluded(p.clone()), Bound::Unbounded),
            None => self.iter(),
        }
    }

    fn range(&self, lo: Bound<RelPath>, hi: Bound<RelPath>) -> Box<dyn Iterator<Item = Entry> + '_> {
        let as_str = |b: &Bound<RelPath>| match b {
            Bound::Included(p) => Bound::Included(p.as_str().to_string()),
            Bound::Excluded(p) => Bound::Excluded(p.as_str().to_string()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (slo, shi) = (as_str(&lo), as_str(&hi));
        let bounds = (slo.as_ref().map(String::as_str), shi.as_ref().map(String::as_str));
        let committed = match self.snapshot.entries.range::<&str>(bounds) {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(e);
                None
            }
        };
        let committed = committed.into_iter().flatten().map_while(move |item| match item {
            Ok((k, v)) => match RelPath::new(k.value())
                .map_err(|e| e.to_string())
                .and_then(|p| decode(p, v.value()))
            {
                Ok(s) => Some(s.entry),
                Err(e) => {
                    self.fail(format!("entry {:?}: {e}", k.value()));
                    None
                }
            },
            Err(e) => {
                self.fail(e);
                None
            }
        });
        let pending = self.pending.range((lo, hi)).map(|(_, c)| c.stored.entry.clone());
        Box::new(Merge {
            committed: committed.peekable(),
            pending: pending.peekable(),
        })
    }

    /// The entries changed after sequence number `seq`, each once (as it
    /// is now), in the order of their last change, with its number.
    pub fn since(&self, seq: u64) -> Box<dyn Iterator<Item = (u64, Entry)> + '_> {
        let committed = match self.snapshot.seqs.range(seq.saturating_add(1)..) {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(e);
                None
            }
        };
        let committed = committed.into_iter().flatten().map_while(move |item| match item {
            Ok((k, v)) => Some((k.value(), RelPath::new(v.value()).ok())),
            Err(e) => {
                self.fail(e);
                None
            }
        });
        let pending = self.pending_seqs.range(seq.saturating_add(1)..).map(|(s, p)| (*s, Some(p.clone())));
        Box::new(committed.chain(pending).filter_map(move |(s, path)| {
            let Some(path) = path else {
                self.fail("a damaged path in the sequence table");
                return None;
            };
            // A path changed again later is yielded at its later number.
            self.stored(&path).filter(|st| st.seq == s).map(|st| (s, st.entry))
        }))
    }

    pub fn len(&self) -> usize {
        self.meta.entries as usize
    }

    pub fn is_empty(&self) -> bool {
        self.meta.entries == 0
    }

    /// Number of live files and their total size.
    pub fn live_files(&self) -> (usize, u64) {
        (self.meta.live_files as usize, self.meta.live_bytes)
    }

    /// The digest sum of folder `dir` ("" for the whole tree), over the
    /// paths these rules do not ignore.
    pub fn dir_digest(&self, dir: &str) -> DirSum {
        self.dir_sum(dir)
    }

    /// The names of the direct children of folder `dir` (`None`: the
    /// root) that the index holds something at or below, in name order;
    /// `None` when there are more than `limit`. Each child's subtree is
    /// skipped with a new look past it, never walked.
    fn child_names(&self, dir: Option<&RelPath>, limit: usize) -> Option<Vec<String>> {
        let prefix = dir.map_or(String::new(), |d| format!("{}/", d.as_str()));
        let (mut lo, hi) = match dir {
            Some(d) => {
                let (lo, hi) = d.below_bounds();
                (Bound::Included(lo), Bound::Excluded(hi))
            }
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut names: Vec<String> = Vec::new();
        'look: loop {
            for e in self.range(lo.clone(), hi.clone()) {
                let rest = &e.path.as_str()[prefix.len()..];
                let (name, deeper) = match rest.split_once('/') {
                    Some((name, _)) => (name, true),
                    None => (rest, false),
                };
                // Only names that sort between "name" and "name/" (so
                // start with it) can come between a child and its subtree.
                let known = deeper && names.iter().rev().take_while(|n| n.starts_with(name)).any(|n| n == name);
                if !known {
                    if names.len() == limit {
                        return None;
                    }
                    names.push(name.to_string());
                }
                if deeper {
                    // Past the child's subtree: everything below sorts
                    // before "name0".
                    if let Ok(child) = RelPath::new(format!("{prefix}{name}")) {
                        lo = Bound::Included(child.below_bounds().1);
                        continue 'look;
                    }
                }
            }
            break;
        }
        names.sort();
        Some(names)
    }

    /// The direct children of folder `dir` (`None`: the root): every path
    /// the index holds something at or below.
    pub fn child_paths(&self, dir: Option<&RelPath>) -> Vec<RelPath> {
        let prefix = dir.map_or(String::new(), |d| format!("{}/", d.as_str()));
        let names = self.child_names(dir, usize::MAX).unwrap_or_default();
        names
            .into_iter()
            .filter_map(|n| RelPath::new(format!("{prefix}{n}")).ok())
            .collect()
    }

    /// The direct children of folder `dir` (`None`: the root) with the
    /// digest of each: its own entry's leaf plus everything below it, over
    /// the paths these rules do not ignore (a child with nothing counted is
    /// left out). `None` when there are more than `limit`.
    pub fn children(&self, dir: Option<&RelPath>, limit: usize) -> Option<Vec<(String, Hash)>> {
        let prefix = dir.map_or(String::new(), |d| format!("{}/", d.as_str()));
        let children = self
            .child_names(dir, limit)?
            .into_iter()
            .filter_map(|name| {
                let path = RelPath::new(format!("{prefix}{name}")).ok()?;
                let mut sum = self.dir_sum(path.as_str());
                if let Some(e) = self.get(&path).filter(|e| self.counts(e)) {
                    sum.add(&e);
                }
                (sum != DirSum::default()).then(|| (name, sum.digest()))
            })
            .collect();
        Some(children)
    }

    /// Leave what `rules` ignore out of the digest sums: unless the sums
    /// were made under these rules (a restart), they are computed again,
    /// in one pass over the index.
    pub fn set_ignore(&mut self, rules: IgnoreRules) {
        let key = rules
            .source()
            .map_or(0, |h| u64::from_le_bytes(h.0[..8].try_into().unwrap_or_default()).max(1));
        self.ignore = rules;
        if key == self.meta.sums_rules {
            return;
        }
        self.meta.sums_rules = key;
        let mut sums: BTreeMap<String, DirSum> = BTreeMap::new();
        for e in self.iter() {
            if self.counts(&e) {
                for dir in Self::dirs_of(&e.path) {
                    sums.entry(dir.to_string()).or_default().add(&e);
                }
            }
        }
        sums.entry(String::new()).or_default();
        self.pending_dirs = sums;
        self.dirs_reset = true;
    }

    /// How far we have taken `device`'s index.
    pub fn peer_mark(&self, device: NodeId) -> Option<PeerMark> {
        if let Some(m) = self.pending_marks.get(&device) {
            return Some(*m);
        }
        match self.snapshot.peers.get(device.0) {
            Ok(v) => v.and_then(|v| PeerMark::decode(v.value())),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    pub fn set_peer_mark(&mut self, device: NodeId, mark: PeerMark) {
        if self.peer_mark(device) != Some(mark) {
            self.pending_marks.insert(device, mark);
        }
    }

    /// Commit, and mark the index as closed cleanly: the next start keeps
    /// its identity (see `over`).
    pub fn close(&mut self) -> Result<(), IndexError> {
        self.commit()?;
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?.insert(CLEAN, 1).map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Make every change so far durable, in one transaction.
    pub fn commit(&mut self) -> Result<(), IndexError> {
        if let Some(f) = self.failure() {
            return Err(IndexError::Db(f.to_string()));
        }
        if self.uncommitted() == 0 && self.pending_dirs.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(self.durability);
        {
            let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut seqs = txn.open_table(SEQS).map_err(db_err)?;
            let mut hashes = txn.open_table(HASHES).map_err(db_err)?;
            for (path, change) in &self.pending {
                if let Some((old_seq, old_hash)) = change.was {
                    seqs.remove(old_seq).map_err(db_err)?;
                    if let Some(h) = old_hash {
                        hashes.remove(hash_key(&h, path).as_slice()).map_err(db_err)?;
                    }
                }
                let s = &change.stored;
                entries.insert(path.as_str(), encode(s).as_slice()).map_err(db_err)?;
                seqs.insert(s.seq, path.as_str()).map_err(db_err)?;
                if let Some(h) = live_file_hash(&s.entry) {
                    hashes.insert(hash_key(&h, path).as_slice(), ()).map_err(db_err)?;
                }
            }
            let mut dirs = txn.open_table(DIRS).map_err(db_err)?;
            if self.dirs_reset {
                dirs.retain(|_, _| false).map_err(db_err)?;
            }
            for (dir, sum) in &self.pending_dirs {
                if *sum == DirSum::default() && !dir.is_empty() {
                    dirs.remove(dir.as_str()).map_err(db_err)?;
                } else {
                    dirs.insert(dir.as_str(), sum.encode().as_slice()).map_err(db_err)?;
                }
            }
            let mut peers = txn.open_table(PEERS).map_err(db_err)?;
            for (device, mark) in &self.pending_marks {
                peers.insert(device.0, mark.encode().as_slice()).map_err(db_err)?;
            }
            let mut meta = txn.open_table(META).map_err(db_err)?;
            for (key, v) in META_KEYS.iter().zip(self.meta.values()) {
                meta.insert(*key, v).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        self.snapshot = Self::snapshot(&self.db)?;
        self.pending.clear();
        self.pending_seqs.clear();
        self.pending_hashes.clear();
        self.pending_dirs.clear();
        self.pending_marks.clear();
        self.dirs_reset = false;
        Ok(())
    }
}

fn live_file_hash(e: &Entry) -> Option<Hash> {
    (!e.deleted && e.kind == Kind::File).then_some(e.hash)
}

fn hash_key(hash: &Hash, path: &RelPath) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + path.as_str().len());
    k.extend_from_slice(&hash.0);
    k.extend_from_slice(path.as_str().as_bytes());
    k
}

/// Two sorted sequences of entries as one; on equal paths the pending one
/// (newer) is taken.
struct Merge<C: Iterator<Item = Entry>, P: Iterator<Item = Entry>> {
    committed: std::iter::Peekable<C>,
    pending: std::iter::Peekable<P>,
}

impl<C: Iterator<Item = Entry>, P: Iterator<Item = Entry>> Iterator for Merge<C, P> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        match (self.committed.peek(), self.pending.peek()) {
            (Some(c), Some(p)) => match c.path.cmp(&p.path) {
                std::cmp::Ordering::Less => self.committed.next(),
                std::cmp::Ordering::Equal => {
                    self.committed.next();
                    self.pending.next()
                }
                std::cmp::Ordering::Greater => self.pending.next(),
            },
            (Some(_), None) => self.committed.next(),
            (None, _) => self.pending.next(),
        }
    }
}

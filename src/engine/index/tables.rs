//! The index, seen by the engine through a narrow, synchronous
//! interface, kept in a database behind a seam (`db.rs`: the database file in
//! production, `fs::index_db`; a map in memory for tests). Changes collect
//! in memory (`pending`) and reach the database in one transaction per
//! `commit`, which the node makes when the engine says so
//! (`Command::SaveIndex`, every two seconds, and after a look that changed
//! the index), and which happens at once when 8192 changes wait: many
//! changes per durable commit, never a rewrite of everything. Reads look
//! at the pending changes first, then at the last commit, so the engine
//! sees every change at once, and what it reads is the same in a test, a
//! simulation and production.
//!
//! Besides the entries, the database keeps:
//! - a sequence number per change, from a counter of this index, and the
//!   path each number last changed (`since`: what changed after a point,
//!   for the incremental index exchange);
//! - live files by content hash (local copies and renames);
//! - the digest sums of every folder (`digest.rs`);
//! - per peer device, how far its index has been taken (`PeerMark`);
//! - the index's identity, random at creation (drawn by whoever opens
//!   the database, `fs::index_db::open_index`): a wiped state directory
//!   is a new identity, and its peers send it everything;
//! - the install journal: received versions about to be put in place,
//!   durable before their rename (`journal_installs`), so that a crash
//!   before the next commit cannot make them look like new local files.
//!
//! Range reads (a folder, changes since a number, children, a file by
//! hash) are in `query.rs`.
//!
//! Owns: the tables' contents and their consistency. Must not: decide
//! anything about sync, or do IO but through `IndexDb`. A database that
//! fails to read or write is a failure the node stops on (`failure`),
//! never an empty answer it acts on silently.

use super::codec::{decode, encode, Stored};
use super::db::{be, from_be, IndexDb, IndexError, OnDisk, Table, Write};
use super::digest::DirSum;
use super::memory::MemoryDb;
use crate::engine::ignore::IgnoreRules;
use crate::engine::{Known, Stat};
use crate::wire::{Entry, Hash, Kind, NodeId, RelPath};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::OnceLock;
use tracing::error;

/// The `Settings` row of the text of the exclusion rules the index was
/// kept under.
const EXCLUDE_SETTING: &str = "exclude";
/// Pending changes at which the index commits at once rather than at the
/// node's next save: bounds the memory a large scan or an initial sync
/// holds uncommitted (a crash then loses less, too).
const COMMIT_AT: usize = 8192;

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
pub(super) struct Change {
    /// `None`: the path was forgotten (`Index::forget`).
    pub(super) stored: Option<Stored>,
    /// What the last commit holds for the path: its keys in `Table::Seqs`
    /// and `Table::Hashes` go at the commit.
    was: Option<(u64, Option<Hash>)>,
}

pub struct Index {
    pub(super) db: Box<dyn IndexDb>,
    /// Commits are durable when they return (not in memory).
    durable: bool,
    meta: Meta,
    pub(super) pending: BTreeMap<RelPath, Change>,
    pub(super) pending_seqs: BTreeMap<u64, RelPath>,
    /// Live files added since the commit, by hash (entries they no longer
    /// hold are filtered out on lookup).
    pub(super) pending_hashes: HashMap<Hash, BTreeSet<RelPath>>,
    pending_dirs: BTreeMap<String, DirSum>,
    pending_marks: BTreeMap<NodeId, PeerMark>,
    /// The folder sums were recomputed (other ignore rules): the committed
    /// ones are stale and replaced at the commit.
    dirs_reset: bool,
    /// Paths left out of the digest sums (ignored here).
    ignore: IgnoreRules,
    /// The text of the exclusion rules the index was kept under, and
    /// whether it changed since the commit.
    exclusion_rules: Vec<u8>,
    exclusion_rules_changed: bool,
    /// The install journal's rows left by an earlier run (it stopped
    /// before their outcome was committed: see `INSTALLING`), the paths
    /// journaled by this run, and the paths whose outcome is recorded
    /// since the last commit (their rows go with the next one).
    installing: BTreeMap<RelPath, Entry>,
    journaled: BTreeSet<RelPath>,
    installed: BTreeSet<RelPath>,
    /// Changes to `Table::Held` since the commit (`None`: released).
    pending_held: BTreeMap<RelPath, Option<Entry>>,
    /// Paths found to have no row in `Table::Entries` since the last
    /// commit, at most `KNOWN_ABSENT_MAX`. A new file's path is read
    /// several times before its version is pending (on a first sync each
    /// read went through the database's tree for nothing, at a few µs a
    /// read); the database changes only at a commit, which empties this.
    known_absent: RefCell<HashSet<RelPath>>,
    failure: OnceLock<String>,
}

/// Paths `Index::known_absent` holds at most (it is emptied when full).
const KNOWN_ABSENT_MAX: usize = 4096;

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
        Index::open(Box::new(MemoryDb::default()), false, 1).unwrap_or_else(|e| unreachable!("a map in memory cannot fail: {e}"))
    }
}

impl Index {
    /// Whether the file at the index's path is still this database.
    pub fn on_disk(&self) -> Result<OnDisk, IndexError> {
        self.db.on_disk()
    }

    /// The database file's path (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.db.path()
    }

    /// Commit, then write the whole index to a new database file at its
    /// path, and go on with that one: the old file was deleted or moved
    /// away under the running node (`on_disk`).
    pub fn rewrite(&mut self) -> Result<(), IndexError> {
        self.commit()?;
        self.db.rewrite()
    }

    /// The index kept in `db`; `durable`: each commit is on disk when it
    /// returns. `fresh_identity` (not 0) becomes the index's identity if
    /// the database has none yet or was not closed cleanly: the caller
    /// draws it at random (the engine draws nothing).
    pub fn open(mut db: Box<dyn IndexDb>, durable: bool, fresh_identity: u64) -> Result<Index, IndexError> {
        let mut meta = Meta::default();
        let mut installing = BTreeMap::new();
        for row in db.range(Table::Installing, Bound::Unbounded, Bound::Unbounded)? {
            let (path, record) = row?;
            // A damaged or foreign row only costs its recovery.
            let Some(path) = std::str::from_utf8(&path).ok().and_then(|p| RelPath::new(p).ok()) else {
                continue;
            };
            if let Ok(stored) = decode(path.clone(), &record) {
                installing.insert(path, stored.entry);
            }
        }
        let exclusion_rules = db.get(Table::Settings, EXCLUDE_SETTING.as_bytes())?.unwrap_or_default();
        let number = |db: &dyn IndexDb, key: &str| -> Result<u64, IndexError> {
            Ok(db.get(Table::Meta, key.as_bytes())?.as_deref().and_then(from_be).unwrap_or(0))
        };
        let mut values = [0u64; 6];
        for (v, key) in values.iter_mut().zip(META_KEYS) {
            *v = number(db.as_ref(), key)?;
        }
        [
            meta.identity,
            meta.next_seq,
            meta.entries,
            meta.live_files,
            meta.live_bytes,
            meta.sums_rules,
        ] = values;
        let clean = number(db.as_ref(), CLEAN)? == 1;
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
        let mut writes: Vec<Write> = META_KEYS
            .iter()
            .zip(meta.values())
            .map(|(key, v)| Write::Put(Table::Meta, key.as_bytes().to_vec(), be(v).to_vec()))
            .collect();
        writes.push(Write::Put(Table::Meta, CLEAN.as_bytes().to_vec(), be(0).to_vec()));
        db.commit(writes, durable)?;
        Ok(Index {
            db,
            durable,
            meta,
            pending: BTreeMap::new(),
            pending_seqs: BTreeMap::new(),
            pending_hashes: HashMap::new(),
            pending_dirs: BTreeMap::new(),
            pending_marks: BTreeMap::new(),
            dirs_reset: false,
            ignore: IgnoreRules::default(),
            exclusion_rules,
            exclusion_rules_changed: false,
            installing,
            journaled: BTreeSet::new(),
            installed: BTreeSet::new(),
            pending_held: BTreeMap::new(),
            known_absent: RefCell::default(),
            failure: OnceLock::new(),
        })
    }

    /// The first read or write that failed: the node stops on it.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    pub(super) fn fail(&self, what: impl std::fmt::Display) {
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
        self.pending.len()
            + self.pending_marks.len()
            + self.installed.len()
            + self.pending_held.len()
            + usize::from(self.dirs_reset)
            + usize::from(self.exclusion_rules_changed)
    }

    pub(super) fn stored(&self, path: &RelPath) -> Option<Stored> {
        if let Some(c) = self.pending.get(path) {
            return c.stored.clone();
        }
        if self.known_absent.borrow().contains(path) {
            return None;
        }
        match self.db.get(Table::Entries, path.as_str().as_bytes()) {
            Ok(Some(v)) => match decode(path.clone(), &v) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.fail(format!("entry {path}: {e}"));
                    None
                }
            },
            Ok(None) => {
                let mut absent = self.known_absent.borrow_mut();
                if absent.len() >= KNOWN_ABSENT_MAX {
                    absent.clear();
                }
                absent.insert(path.clone());
                None
            }
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

    pub(super) fn counts(&self, e: &Entry) -> bool {
        !self.ignore.is_ignored(&e.path, e.kind == Kind::Dir)
    }

    /// The folders whose sums cover `path`: the root ("") and each folder
    /// above it.
    fn dirs_of(path: &RelPath) -> impl Iterator<Item = &str> {
        let s = path.as_str();
        std::iter::once("").chain(s.match_indices('/').map(move |(i, _)| &s[..i]))
    }

    /// The digest sum of folder `dir` ("" for the whole tree), over the
    /// paths these rules do not ignore.
    pub fn dir_sum(&self, dir: &str) -> DirSum {
        if let Some(s) = self.pending_dirs.get(dir) {
            return *s;
        }
        if self.dirs_reset {
            return DirSum::default();
        }
        match self.db.get(Table::Dirs, dir.as_bytes()) {
            Ok(Some(v)) => DirSum::decode(&v).unwrap_or_else(|| {
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
        let was = self.committed_keys(path, Some(&stored));
        self.pending.insert(path.clone(), Change { stored: Some(stored), was });
        self.commit_if_full();
    }

    /// `entry` replaces what the index holds at its path; `stat` is the
    /// file's when this node looked at it (`None`: it did not, e.g. a file
    /// received, whose next look records it).
    pub fn insert_seen(&mut self, entry: Entry, stat: Option<Stat>) {
        let old = self.stored(&entry.path);
        let seq = self.meta.next_seq;
        self.meta.next_seq += 1;
        let was = self.replace(&entry.path, old.as_ref());
        self.meta.entries += 1;
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
                stored: Some(Stored { entry, seq, stat }),
                was,
            },
        );
        self.commit_if_full();
    }

    /// What the committed snapshot holds for `path` (see `Change::was`),
    /// given `old`, what the index holds there now.
    fn committed_keys(&self, path: &RelPath, old: Option<&Stored>) -> Option<(u64, Option<Hash>)> {
        match self.pending.get(path) {
            Some(c) => c.was,
            None => old.map(|o| (o.seq, live_file_hash(&o.entry))),
        }
    }

    /// `old`, what the index holds at `path`, is being replaced (or
    /// forgotten): its sequence number and its share of the counts and
    /// sums go. Returns the committed keys the next commit drops.
    fn replace(&mut self, path: &RelPath, old: Option<&Stored>) -> Option<(u64, Option<Hash>)> {
        let was = self.committed_keys(path, old);
        if let Some(o) = old {
            if self.pending.contains_key(path) {
                self.pending_seqs.remove(&o.seq);
            }
            self.uncount(&o.entry);
        }
        was
    }

    /// Take `e`, which the index holds, out of the counts and sums.
    fn uncount(&mut self, e: &Entry) {
        self.adjust_sums(e, false);
        if live_file_hash(e).is_some() {
            self.meta.live_files = self.meta.live_files.wrapping_sub(1);
            self.meta.live_bytes = self.meta.live_bytes.wrapping_sub(e.size);
        }
        self.meta.entries = self.meta.entries.wrapping_sub(1);
    }

    /// Forget what the index holds at `path`, as if it had never been
    /// heard of: no tombstone, no sequence number, nothing to send. For a
    /// path excluded here that is synced again: its entry told what the
    /// peers hold, not what this disk does.
    pub fn forget(&mut self, path: &RelPath) {
        let Some(old) = self.stored(path) else { return };
        let was = self.replace(path, Some(&old));
        self.pending.insert(path.clone(), Change { stored: None, was });
        self.commit_if_full();
    }

    /// An exclusion rule now names `entry`'s path: remember `entry` as
    /// the version this disk holds there (`held`), whatever the entries
    /// follow from now on.
    pub fn hold(&mut self, entry: Entry) {
        self.pending_held.insert(entry.path.clone(), Some(entry));
    }

    /// The version this disk held at `path` when a rule came to exclude
    /// it, if any.
    pub fn held(&self, path: &RelPath) -> Option<Entry> {
        if let Some(e) = self.pending_held.get(path) {
            return e.clone();
        }
        match self.db.get(Table::Held, path.as_str().as_bytes()) {
            Ok(v) => v.and_then(|v| decode(path.clone(), &v).ok()).map(|s| s.entry),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// The rule excluding `path` went: what was held there is no longer.
    pub fn release(&mut self, path: &RelPath) {
        self.pending_held.insert(path.clone(), None);
    }

    /// The text of the exclusion rules the index was kept under (empty:
    /// none).
    pub fn exclusion_rules(&self) -> &[u8] {
        &self.exclusion_rules
    }

    /// The index is kept under exclusion rules `text` from now on.
    pub fn set_exclusion_rules(&mut self, text: &[u8]) {
        if self.exclusion_rules != text {
            self.exclusion_rules = text.to_vec();
            self.exclusion_rules_changed = true;
        }
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
        match self.db.get(Table::Peers, &be(device.0)) {
            Ok(v) => v.and_then(|v| PeerMark::decode(&v)),
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

    /// Make `entries`, received versions about to be renamed into place,
    /// durable in the install journal before any of them is (a write of
    /// its own, apart from the pending changes). After a crash, a file
    /// found showing one of them is that version (`installing`), not a new
    /// local one.
    pub fn journal_installs(&mut self, entries: &[Entry]) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Some(f) = self.failure() {
            return Err(IndexError::Db(f.to_string()));
        }
        // A path installed since the last commit holds its version in the
        // pending changes alone, and its journal row is the only durable
        // word of it: a new row would take that row's place. Commit first,
        // or a crash leaves the disk showing a version neither the index
        // nor the journal holds (found by the workload, faults seed
        // 7200022121: taken then for a local edit built on the new row's
        // version, whose install failed, that version was lost).
        if entries.iter().any(|e| self.installed.contains(&e.path)) {
            self.commit()?;
        }
        let writes = entries
            .iter()
            .map(|e| Write::Put(Table::Installing, e.path.as_str().as_bytes().to_vec(), version_record(e)))
            .collect();
        self.db.commit(writes, self.durable)?;
        for e in entries {
            // Journaled again: its outcome is not recorded yet.
            self.installed.remove(&e.path);
            self.journaled.insert(e.path.clone());
        }
        Ok(())
    }

    /// The version the install journal of an earlier run says was about
    /// to be put in place at `path`, if any. (This run's rows are settled
    /// in the same turn as they are written: they serve only a restart.)
    pub fn installing(&self, path: &RelPath) -> Option<&Entry> {
        self.installing.get(path)
    }

    /// The install journal's rows of an earlier run at and below `dir`
    /// (`None`: the root).
    pub fn installing_under<'a>(&'a self, dir: Option<&RelPath>) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        match dir {
            Some(d) => {
                let (lo, hi) = d.below_bounds();
                Box::new(
                    self.installing
                        .get(d)
                        .into_iter()
                        .chain(self.installing.range(lo..hi).map(|(_, e)| e)),
                )
            }
            None => Box::new(self.installing.values()),
        }
    }

    /// The outcome of installing at `path` is recorded (in the pending
    /// changes, or it failed): its journal row goes with the next commit.
    pub fn install_settled(&mut self, path: &RelPath) {
        if self.journaled.contains(path) || self.installing.contains_key(path) {
            self.installed.insert(path.clone());
        }
    }

    /// Every journal row is settled (a look at the whole tree found what
    /// it could of them), but those within `unfinished` (paths the look
    /// could not finish: being hashed, unreadable).
    pub fn installs_settled(&mut self, unfinished: &BTreeSet<RelPath>) {
        let settled = self.installing.keys().filter(|p| !unfinished.iter().any(|u| p.is_within(u)));
        self.installed.extend(settled.cloned());
    }

    /// Commit, and mark the index as closed cleanly: the next start keeps
    /// its identity (see `open`).
    pub fn close(&mut self) -> Result<(), IndexError> {
        self.commit()?;
        let clean = Write::Put(Table::Meta, CLEAN.as_bytes().to_vec(), be(1).to_vec());
        self.db.commit(vec![clean], self.durable)
    }

    /// Make every change so far durable, in one transaction.
    pub fn commit(&mut self) -> Result<(), IndexError> {
        if let Some(f) = self.failure() {
            return Err(IndexError::Db(f.to_string()));
        }
        if self.uncommitted() == 0 && self.pending_dirs.is_empty() {
            return Ok(());
        }
        let mut writes = Vec::with_capacity(3 * self.pending.len() + self.pending_dirs.len() + 16);
        for (path, change) in &self.pending {
            let key = path.as_str().as_bytes();
            if let Some((old_seq, old_hash)) = change.was {
                writes.push(Write::Delete(Table::Seqs, be(old_seq).to_vec()));
                if let Some(h) = old_hash {
                    writes.push(Write::Delete(Table::Hashes, hash_key(&h, path)));
                }
            }
            let Some(s) = &change.stored else {
                writes.push(Write::Delete(Table::Entries, key.to_vec()));
                continue;
            };
            writes.push(Write::Put(Table::Entries, key.to_vec(), encode(s)));
            writes.push(Write::Put(Table::Seqs, be(s.seq).to_vec(), key.to_vec()));
            if let Some(h) = live_file_hash(&s.entry) {
                writes.push(Write::Put(Table::Hashes, hash_key(&h, path), Vec::new()));
            }
        }
        if self.dirs_reset {
            writes.push(Write::Clear(Table::Dirs));
        }
        for (dir, sum) in &self.pending_dirs {
            if *sum == DirSum::default() && !dir.is_empty() {
                writes.push(Write::Delete(Table::Dirs, dir.as_bytes().to_vec()));
            } else {
                writes.push(Write::Put(Table::Dirs, dir.as_bytes().to_vec(), sum.encode().to_vec()));
            }
        }
        for (device, mark) in &self.pending_marks {
            writes.push(Write::Put(Table::Peers, be(device.0).to_vec(), mark.encode().to_vec()));
        }
        for (key, v) in META_KEYS.iter().zip(self.meta.values()) {
            writes.push(Write::Put(Table::Meta, key.as_bytes().to_vec(), be(v).to_vec()));
        }
        for path in &self.installed {
            writes.push(Write::Delete(Table::Installing, path.as_str().as_bytes().to_vec()));
        }
        for (path, e) in &self.pending_held {
            let key = path.as_str().as_bytes().to_vec();
            match e {
                Some(e) => writes.push(Write::Put(Table::Held, key, version_record(e))),
                None => writes.push(Write::Delete(Table::Held, key)),
            }
        }
        if self.exclusion_rules_changed {
            writes.push(Write::Put(
                Table::Settings,
                EXCLUDE_SETTING.as_bytes().to_vec(),
                self.exclusion_rules.clone(),
            ));
        }
        self.db.commit(writes, self.durable)?;
        self.known_absent.get_mut().clear();
        self.pending.clear();
        self.pending_seqs.clear();
        self.pending_hashes.clear();
        self.pending_dirs.clear();
        self.pending_marks.clear();
        self.dirs_reset = false;
        self.exclusion_rules_changed = false;
        for path in std::mem::take(&mut self.installed) {
            self.installing.remove(&path);
            self.journaled.remove(&path);
        }
        self.pending_held.clear();
        Ok(())
    }
}

/// A version kept beside the entries (the install journal, what an
/// exclusion held): a record as in `Table::Entries`, with no sequence
/// number or stat of its own.
fn version_record(e: &Entry) -> Vec<u8> {
    encode(&Stored {
        entry: e.clone(),
        seq: 0,
        stat: None,
    })
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

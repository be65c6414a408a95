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
//!   a new identity, and its peers send it everything;
//! - the install journal: received versions about to be put in place,
//!   durable before their rename (`journal_installs`), so that a crash
//!   before the next commit cannot make them look like new local files.
//!
//! Range reads (a folder, changes since a number, children, a file by
//! hash) are in `query.rs`.
//!
//! redb keeps its file open: a database file deleted under a running node
//! still takes commits, into an inode nobody can open again. `on_disk`
//! tells whether the file at the index's path is still this database, and
//! `rewrite` writes the whole index to a new file there.
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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
/// Key: a setting's name; value: its bytes.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// The text of the exclusion rules the index was kept under.
const EXCLUDE_SETTING: &str = "exclude";
/// The install journal: path → the version about to be put in place there
/// (a record as in `ENTRIES`). Committed before the renames of a batch of
/// received files, cleared by the commit that records their outcome: a
/// crash in between leaves the versions the disk may already show.
const INSTALLING: TableDefinition<&str, &[u8]> = TableDefinition::new("installing");
/// Path → the version this disk held when an exclusion rule came to name
/// the path (a record as in `ENTRIES`): the entries then follow the peers,
/// and this is what the file here is when the rule goes.
const HELD: TableDefinition<&str, &[u8]> = TableDefinition::new("held");

/// The database's cache. The index is read in key order and mostly near
/// what changed: a small cache keeps the resident size flat in the size of
/// the tree (issue: a million files in 64 MiB).
const CACHE_BYTES: usize = 16 << 20;

/// Pending changes at which the index commits at once rather than at the
/// node's next save: bounds the memory a large scan or an initial sync
/// holds uncommitted (a crash then loses less, too).
const COMMIT_AT: usize = 8192;

/// Rows copied per transaction when the index is written to a new file.
const REWRITE_ROWS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("index database: {0}")]
    Db(String),
    #[error("cannot write the index to a new file {path}: {reason}")]
    Rewrite { path: String, reason: String },
}

/// Where the database's file stands against the index's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisk {
    /// An index in memory (tests, fuzzing): no file.
    Memory,
    /// The file at the index's path is this database.
    InPlace,
    /// The path holds nothing (or another file) while this database's file
    /// is still linked somewhere else (moved with its folder): commits are
    /// durable there, not where the next start looks.
    Moved,
    /// The file was deleted: commits reach an inode only this process
    /// holds, lost when it ends.
    Unlinked,
}

/// The database's file: its path, and a handle of our own on it (to tell,
/// by its link count and inode, whether it is still there).
struct DbFile {
    path: PathBuf,
    handle: std::fs::File,
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
pub(super) struct Change {
    /// `None`: the path was forgotten (`Index::forget`).
    pub(super) stored: Option<Stored>,
    /// What the committed snapshot holds for the path: its keys in `SEQS`
    /// and `HASHES` go at the commit.
    was: Option<(u64, Option<Hash>)>,
}

/// The tables of the last committed state.
pub(super) struct Snapshot {
    pub(super) entries: ReadOnlyTable<&'static str, &'static [u8]>,
    pub(super) seqs: ReadOnlyTable<u64, &'static str>,
    pub(super) hashes: ReadOnlyTable<&'static [u8], ()>,
    dirs: ReadOnlyTable<&'static str, &'static [u8]>,
    peers: ReadOnlyTable<u64, &'static [u8]>,
}

pub struct Index {
    db: Database,
    /// `None` in memory.
    file: Option<DbFile>,
    pub(super) snapshot: Snapshot,
    durability: Durability,
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
    /// Changes to `HELD` since the commit (`None`: released).
    pending_held: BTreeMap<RelPath, Option<Entry>>,
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
        let (db, file) = Self::open_file(path).map_err(|e| open_err(&e))?;
        let mut fresh = [0u8; 8];
        getrandom::fill(&mut fresh).map_err(|e| open_err(&e))?;
        let mut index = Index::over(db, Durability::Immediate, u64::from_le_bytes(fresh).max(1)).map_err(|e| open_err(&e))?;
        index.file = Some(file);
        Ok((index, existed))
    }

    /// The database at `path`, created if missing, and our handle on its file.
    fn open_file(path: &Path) -> Result<(Database, DbFile), String> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| e.to_string())?;
        let handle = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let file = DbFile {
            path: path.to_path_buf(),
            handle,
        };
        Ok((db, file))
    }

    /// Whether the file at the index's path is still this database.
    pub fn on_disk(&self) -> std::io::Result<OnDisk> {
        let Some(f) = &self.file else { return Ok(OnDisk::Memory) };
        let own = f.handle.metadata()?;
        if own.nlink() == 0 {
            return Ok(OnDisk::Unlinked);
        }
        match std::fs::metadata(&f.path) {
            Ok(m) if m.dev() == own.dev() && m.ino() == own.ino() => Ok(OnDisk::InPlace),
            Ok(_) => Ok(OnDisk::Moved),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(OnDisk::Moved),
            Err(e) => Err(e),
        }
    }

    /// The database file's path (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }

    /// Write the whole index, pending changes included, to a new database
    /// file at its path, and go on with that one: the old file was deleted
    /// or moved away under the running node (`on_disk`). The copy is made
    /// beside it (`index.redb.new`) and renamed into place once durable, so
    /// a crash meanwhile leaves no half-written index where the next start
    /// looks. The folder must exist.
    pub fn rewrite(&mut self) -> Result<(), IndexError> {
        let Some(path) = self.path().map(Path::to_path_buf) else {
            return Ok(());
        };
        self.commit()?;
        let tmp = path.with_extension("redb.new");
        let shown = tmp.display().to_string();
        let err = |reason: &dyn std::fmt::Display| IndexError::Rewrite {
            path: shown.clone(),
            reason: reason.to_string(),
        };
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&e)),
        }
        {
            let new = Database::builder().set_cache_size(CACHE_BYTES).create(&tmp).map_err(|e| err(&e))?;
            let from = self.db.begin_read().map_err(|e| err(&e))?;
            copy_table(&from, &new, ENTRIES).map_err(|e| err(&e))?;
            copy_table(&from, &new, SEQS).map_err(|e| err(&e))?;
            copy_table(&from, &new, HASHES).map_err(|e| err(&e))?;
            copy_table(&from, &new, DIRS).map_err(|e| err(&e))?;
            copy_table(&from, &new, META).map_err(|e| err(&e))?;
            copy_table(&from, &new, PEERS).map_err(|e| err(&e))?;
            copy_table(&from, &new, SETTINGS).map_err(|e| err(&e))?;
            copy_table(&from, &new, INSTALLING).map_err(|e| err(&e))?;
            // One durable commit makes every copied row durable.
            let mut txn = new.begin_write().map_err(|e| err(&e))?;
            txn.set_durability(Durability::Immediate);
            txn.commit().map_err(|e| err(&e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| err(&e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err(&e))?;
        }
        let (db, file) = Self::open_file(&path).map_err(|e| err(&e))?;
        let snapshot = Self::snapshot(&db)?;
        // The old snapshot's tables go before the old database.
        self.snapshot = snapshot;
        self.db = db;
        self.file = Some(file);
        Ok(())
    }

    fn over(db: Database, durability: Durability, fresh_identity: u64) -> Result<Index, IndexError> {
        // Every table exists from the first commit on: a read of a missing
        // table would be an error.
        let txn = db.begin_write().map_err(db_err)?;
        let mut meta = Meta::default();
        let mut installing = BTreeMap::new();
        let exclusion_rules;
        {
            txn.open_table(ENTRIES).map_err(db_err)?;
            txn.open_table(SEQS).map_err(db_err)?;
            txn.open_table(HASHES).map_err(db_err)?;
            txn.open_table(DIRS).map_err(db_err)?;
            txn.open_table(PEERS).map_err(db_err)?;
            txn.open_table(HELD).map_err(db_err)?;
            let journal = txn.open_table(INSTALLING).map_err(db_err)?;
            for row in journal.iter().map_err(db_err)? {
                let (path, record) = row.map_err(db_err)?;
                // A damaged or foreign row only costs its recovery.
                let Ok(path) = RelPath::new(path.value()) else { continue };
                if let Ok(stored) = decode(path.clone(), record.value()) {
                    installing.insert(path, stored.entry);
                }
            }
            let settings = txn.open_table(SETTINGS).map_err(db_err)?;
            exclusion_rules = settings
                .get(EXCLUDE_SETTING)
                .map_err(db_err)?
                .map(|g| g.value().to_vec())
                .unwrap_or_default();
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
            file: None,
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
            exclusion_rules,
            exclusion_rules_changed: false,
            installing,
            journaled: BTreeSet::new(),
            installed: BTreeSet::new(),
            pending_held: BTreeMap::new(),
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
        // The table is read rarely (a rule going): a transaction of its own.
        let read = || -> Result<Option<Entry>, IndexError> {
            let txn = self.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(HELD).map_err(db_err)?;
            let Some(v) = table.get(path.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            Ok(decode(path.clone(), v.value()).ok().map(|s| s.entry))
        };
        read().unwrap_or_else(|e| {
            self.fail(e);
            None
        })
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
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(self.durability);
        {
            let mut journal = txn.open_table(INSTALLING).map_err(db_err)?;
            for e in entries {
                let record = encode(&Stored {
                    entry: e.clone(),
                    seq: 0,
                    stat: None,
                });
                journal.insert(e.path.as_str(), record.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
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

    /// The outcome of installing at `path` is recorded (in the pending
    /// changes, or it failed): its journal row goes with the next commit.
    pub fn install_settled(&mut self, path: &RelPath) {
        if self.journaled.contains(path) || self.installing.contains_key(path) {
            self.installed.insert(path.clone());
        }
    }

    /// Every journal row is settled (a look at the whole tree found what
    /// it could of them).
    pub fn installs_settled(&mut self) {
        self.installed.extend(self.installing.keys().cloned());
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
                let Some(s) = &change.stored else {
                    entries.remove(path.as_str()).map_err(db_err)?;
                    continue;
                };
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
            let mut journal = txn.open_table(INSTALLING).map_err(db_err)?;
            for path in &self.installed {
                journal.remove(path.as_str()).map_err(db_err)?;
            }
            let mut held = txn.open_table(HELD).map_err(db_err)?;
            for (path, e) in &self.pending_held {
                match e {
                    Some(e) => {
                        let record = encode(&Stored {
                            entry: e.clone(),
                            seq: 0,
                            stat: None,
                        });
                        held.insert(path.as_str(), record.as_slice()).map_err(db_err)?;
                    }
                    None => {
                        held.remove(path.as_str()).map_err(db_err)?;
                    }
                }
            }
            if self.exclusion_rules_changed {
                let mut settings = txn.open_table(SETTINGS).map_err(db_err)?;
                settings.insert(EXCLUDE_SETTING, self.exclusion_rules.as_slice()).map_err(db_err)?;
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
        self.exclusion_rules_changed = false;
        for path in std::mem::take(&mut self.installed) {
            self.installing.remove(&path);
            self.journaled.remove(&path);
        }
        self.pending_held.clear();
        Ok(())
    }
}

/// Copy every row of table `def` from `from` into `to`, `REWRITE_ROWS` per
/// transaction (not durable: the caller's last commit makes them so).
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &Database,
    def: TableDefinition<K, V>,
) -> Result<(), IndexError> {
    let source = from.open_table(def).map_err(db_err)?;
    let mut rows = source.iter().map_err(db_err)?;
    loop {
        let mut txn = to.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None);
        let mut done = true;
        {
            let mut table = txn.open_table(def).map_err(db_err)?;
            for row in rows.by_ref().take(REWRITE_ROWS) {
                let (k, v) = row.map_err(db_err)?;
                table.insert(k.value(), v.value()).map_err(db_err)?;
                done = false;
            }
        }
        txn.commit().map_err(db_err)?;
        if done {
            return Ok(());
        }
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

//! The index's database on disk: redb (pure Rust, ACID, one file; the
//! comparison with the alternatives is in docs/ARCHITECTURE.md), behind
//! the engine's `IndexDb` seam. Reads see the last commit (a read
//! transaction's tables, taken again after each commit); a commit is one
//! write transaction.
//!
//! redb keeps its file open: a database file deleted under a running node
//! still takes commits, into an inode nobody can open again. `on_disk`
//! tells whether the file at the index's path is still this database, and
//! `rewrite` writes the whole index to a new file there.
//!
//! Owns: the tables' types on disk (the format of earlier versions: the
//! keys of `Seqs` and `Peers` and the values of `Meta` are numbers, the
//! others strings or bytes) and the file. Must not: know what a record
//! means.

use crate::engine::index::db::{be, from_be, IndexDb, OnDisk, Rows, Table, Write};
use crate::engine::index::IndexError;
/// The index a database file holds, and how far it has taken a peer's
/// (for tools and tests that open the file of a stopped node).
pub use crate::engine::index::{Index, PeerMark};
use crate::fs::files::is_absent;
use redb::{Database, Durability, ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition};
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
/// The install journal: path → the version about to be put in place there.
const INSTALLING: TableDefinition<&str, &[u8]> = TableDefinition::new("installing");
/// Path → the version this disk held when an exclusion came.
const HELD: TableDefinition<&str, &[u8]> = TableDefinition::new("held");

/// The database's cache. The index is read in key order and mostly near
/// what changed: a small cache keeps the resident size flat in the size of
/// the tree (issue: a million files in 64 MiB).
const CACHE_BYTES: usize = 16 << 20;

/// Rows copied per transaction when the index is written to a new file.
const REWRITE_ROWS: usize = 8192;

fn db_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Db(e.to_string())
}

/// A string key or value that is not UTF-8 cannot be in these tables.
fn text(b: &[u8]) -> Result<&str, IndexError> {
    std::str::from_utf8(b).map_err(|_| IndexError::Db("a key or value that is not text".into()))
}

fn number(b: &[u8]) -> Result<u64, IndexError> {
    from_be(b).ok_or_else(|| IndexError::Db("a number that is not 8 bytes".into()))
}

/// The tables of the last commit.
struct Snapshot {
    entries: ReadOnlyTable<&'static str, &'static [u8]>,
    seqs: ReadOnlyTable<u64, &'static str>,
    hashes: ReadOnlyTable<&'static [u8], ()>,
    dirs: ReadOnlyTable<&'static str, &'static [u8]>,
    meta: ReadOnlyTable<&'static str, u64>,
    peers: ReadOnlyTable<u64, &'static [u8]>,
    settings: ReadOnlyTable<&'static str, &'static [u8]>,
    installing: ReadOnlyTable<&'static str, &'static [u8]>,
    held: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Snapshot {
    fn of(db: &Database) -> Result<Snapshot, IndexError> {
        let r = db.begin_read().map_err(db_err)?;
        Ok(Snapshot {
            entries: r.open_table(ENTRIES).map_err(db_err)?,
            seqs: r.open_table(SEQS).map_err(db_err)?,
            hashes: r.open_table(HASHES).map_err(db_err)?,
            dirs: r.open_table(DIRS).map_err(db_err)?,
            meta: r.open_table(META).map_err(db_err)?,
            peers: r.open_table(PEERS).map_err(db_err)?,
            settings: r.open_table(SETTINGS).map_err(db_err)?,
            installing: r.open_table(INSTALLING).map_err(db_err)?,
            held: r.open_table(HELD).map_err(db_err)?,
        })
    }
}

/// The index's redb file.
pub struct RedbIndex {
    db: Database,
    path: PathBuf,
    /// A handle of our own on the file, to tell by its link count and
    /// inode whether it is still at `path`.
    handle: std::fs::File,
    snapshot: Snapshot,
}

impl RedbIndex {
    /// The database at `path`, created (with every table) if missing.
    pub fn open(path: &Path) -> Result<RedbIndex, IndexError> {
        let open_err = |e: &dyn std::fmt::Display| IndexError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let (db, handle) = open_file(path).map_err(|e| open_err(&e))?;
        create_tables(&db).map_err(|e| open_err(&e))?;
        let snapshot = Snapshot::of(&db).map_err(|e| open_err(&e))?;
        Ok(RedbIndex {
            db,
            path: path.to_path_buf(),
            handle,
            snapshot,
        })
    }
}

/// The index kept at `path`, created (with a new random identity) when it
/// does not exist. Returns the index and whether it existed.
pub fn open_index(path: &Path) -> Result<(Index, bool), IndexError> {
    let existed = path.exists();
    let db = RedbIndex::open(path)?;
    let mut fresh = [0u8; 8];
    getrandom::fill(&mut fresh).map_err(|e| IndexError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let index = Index::open(Box::new(db), true, u64::from_le_bytes(fresh).max(1))?;
    Ok((index, existed))
}

/// The database at `path`, created if missing, and our handle on its file.
fn open_file(path: &Path) -> Result<(Database, std::fs::File), String> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| e.to_string())?;
    let handle = std::fs::File::open(path).map_err(|e| e.to_string())?;
    Ok((db, handle))
}

/// Every table exists from the first commit on: a read of a missing table
/// would be an error.
fn create_tables(db: &Database) -> Result<(), IndexError> {
    let txn = db.begin_write().map_err(db_err)?;
    txn.open_table(ENTRIES).map_err(db_err)?;
    txn.open_table(SEQS).map_err(db_err)?;
    txn.open_table(HASHES).map_err(db_err)?;
    txn.open_table(DIRS).map_err(db_err)?;
    txn.open_table(META).map_err(db_err)?;
    txn.open_table(PEERS).map_err(db_err)?;
    txn.open_table(SETTINGS).map_err(db_err)?;
    txn.open_table(INSTALLING).map_err(db_err)?;
    txn.open_table(HELD).map_err(db_err)?;
    txn.commit().map_err(db_err)
}

/// A range of byte bounds as bounds of a table's own keys, each read by
/// `key` (`text` or `number`).
fn bounds<'a, T>(
    lo: Bound<&'a [u8]>,
    hi: Bound<&'a [u8]>,
    key: impl Fn(&'a [u8]) -> Result<T, IndexError>,
) -> Result<(Bound<T>, Bound<T>), IndexError> {
    let one = |b: Bound<&'a [u8]>| -> Result<Bound<T>, IndexError> {
        Ok(match b {
            Bound::Included(k) => Bound::Included(key(k)?),
            Bound::Excluded(k) => Bound::Excluded(key(k)?),
            Bound::Unbounded => Bound::Unbounded,
        })
    };
    Ok((one(lo)?, one(hi)?))
}

/// The rows of `$table` in `$bounds`, keys and values turned into bytes
/// by `$key` and `$value`.
macro_rules! rows {
    ($table:expr, $k:ty, $bounds:expr, $key:expr, $value:expr) => {{
        let rows = $table.range::<$k>($bounds).map_err(db_err)?;
        let rows: Rows<'_> = Box::new(rows.map(move |row| {
            let (k, v) = row.map_err(db_err)?;
            Ok(($key(k.value()), $value(v.value())))
        }));
        Ok(rows)
    }};
}

macro_rules! text_rows {
    ($table:expr, $lo:expr, $hi:expr, $value:expr) => {{
        rows!($table, &str, bounds($lo, $hi, text)?, |k: &str| k.as_bytes().to_vec(), $value)
    }};
}

impl IndexDb for RedbIndex {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let s = &self.snapshot;
        let by_text = |t: &ReadOnlyTable<&'static str, &'static [u8]>| -> Result<Option<Vec<u8>>, IndexError> {
            Ok(t.get(text(key)?).map_err(db_err)?.map(|g| g.value().to_vec()))
        };
        match table {
            Table::Entries => by_text(&s.entries),
            Table::Dirs => by_text(&s.dirs),
            Table::Settings => by_text(&s.settings),
            Table::Installing => by_text(&s.installing),
            Table::Held => by_text(&s.held),
            Table::Seqs => Ok(s.seqs.get(number(key)?).map_err(db_err)?.map(|g| g.value().as_bytes().to_vec())),
            Table::Hashes => Ok(s.hashes.get(key).map_err(db_err)?.map(|_| Vec::new())),
            Table::Meta => Ok(s.meta.get(text(key)?).map_err(db_err)?.map(|g| be(g.value()).to_vec())),
            Table::Peers => Ok(s.peers.get(number(key)?).map_err(db_err)?.map(|g| g.value().to_vec())),
        }
    }

    fn range(&self, table: Table, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<Rows<'_>, IndexError> {
        let s = &self.snapshot;
        let bytes = |v: &[u8]| v.to_vec();
        match table {
            Table::Entries => text_rows!(s.entries, lo, hi, bytes),
            Table::Dirs => text_rows!(s.dirs, lo, hi, bytes),
            Table::Settings => text_rows!(s.settings, lo, hi, bytes),
            Table::Installing => text_rows!(s.installing, lo, hi, bytes),
            Table::Held => text_rows!(s.held, lo, hi, bytes),
            Table::Meta => text_rows!(s.meta, lo, hi, |v: u64| be(v).to_vec()),
            Table::Seqs => rows!(s.seqs, u64, bounds(lo, hi, number)?, |k: u64| be(k).to_vec(), |v: &str| v
                .as_bytes()
                .to_vec()),
            Table::Peers => rows!(s.peers, u64, bounds(lo, hi, number)?, |k: u64| be(k).to_vec(), bytes),
            Table::Hashes => rows!(s.hashes, &[u8], (lo, hi), bytes, |_: ()| Vec::new()),
        }
    }

    fn commit(&mut self, writes: Vec<Write>, durable: bool) -> Result<(), IndexError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None });
        {
            let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut seqs = txn.open_table(SEQS).map_err(db_err)?;
            let mut hashes = txn.open_table(HASHES).map_err(db_err)?;
            let mut dirs = txn.open_table(DIRS).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut peers = txn.open_table(PEERS).map_err(db_err)?;
            let mut settings = txn.open_table(SETTINGS).map_err(db_err)?;
            let mut installing = txn.open_table(INSTALLING).map_err(db_err)?;
            let mut held = txn.open_table(HELD).map_err(db_err)?;
            for w in &writes {
                match w {
                    Write::Put(t, k, v) => match t {
                        Table::Entries => entries.insert(text(k)?, v.as_slice()).map(drop),
                        Table::Dirs => dirs.insert(text(k)?, v.as_slice()).map(drop),
                        Table::Settings => settings.insert(text(k)?, v.as_slice()).map(drop),
                        Table::Installing => installing.insert(text(k)?, v.as_slice()).map(drop),
                        Table::Held => held.insert(text(k)?, v.as_slice()).map(drop),
                        Table::Seqs => seqs.insert(number(k)?, text(v)?).map(drop),
                        Table::Hashes => hashes.insert(k.as_slice(), ()).map(drop),
                        Table::Meta => meta.insert(text(k)?, number(v)?).map(drop),
                        Table::Peers => peers.insert(number(k)?, v.as_slice()).map(drop),
                    },
                    Write::Delete(t, k) => match t {
                        Table::Entries => entries.remove(text(k)?).map(drop),
                        Table::Dirs => dirs.remove(text(k)?).map(drop),
                        Table::Settings => settings.remove(text(k)?).map(drop),
                        Table::Installing => installing.remove(text(k)?).map(drop),
                        Table::Held => held.remove(text(k)?).map(drop),
                        Table::Seqs => seqs.remove(number(k)?).map(drop),
                        Table::Hashes => hashes.remove(k.as_slice()).map(drop),
                        Table::Meta => meta.remove(text(k)?).map(drop),
                        Table::Peers => peers.remove(number(k)?).map(drop),
                    },
                    Write::Clear(t) => match t {
                        Table::Entries => entries.retain(|_, _| false),
                        Table::Dirs => dirs.retain(|_, _| false),
                        Table::Settings => settings.retain(|_, _| false),
                        Table::Installing => installing.retain(|_, _| false),
                        Table::Held => held.retain(|_, _| false),
                        Table::Seqs => seqs.retain(|_, _| false),
                        Table::Hashes => hashes.retain(|_, _| false),
                        Table::Meta => meta.retain(|_, _| false),
                        Table::Peers => peers.retain(|_, _| false),
                    },
                }
                .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        self.snapshot = Snapshot::of(&self.db)?;
        Ok(())
    }

    fn on_disk(&self) -> Result<OnDisk, IndexError> {
        let io = |e: std::io::Error| IndexError::Db(format!("{}: {e}", self.path.display()));
        let own = self.handle.metadata().map_err(io)?;
        if own.nlink() == 0 {
            return Ok(OnDisk::Unlinked);
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == own.dev() && m.ino() == own.ino() => Ok(OnDisk::InPlace),
            Ok(_) => Ok(OnDisk::Moved),
            Err(e) if is_absent(&e) => Ok(OnDisk::Moved),
            Err(e) => Err(io(e)),
        }
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    /// The copy is made beside the file (`index.redb.new`) and renamed into
    /// place once durable, so a crash meanwhile leaves no half-written
    /// index where the next start looks. The folder must exist.
    fn rewrite(&mut self) -> Result<(), IndexError> {
        let path = self.path.clone();
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
            copy_table(&from, &new, HELD).map_err(|e| err(&e))?;
            // One durable commit makes every copied row durable.
            let mut txn = new.begin_write().map_err(|e| err(&e))?;
            txn.set_durability(Durability::Immediate);
            txn.commit().map_err(|e| err(&e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| err(&e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err(&e))?;
        }
        let (db, handle) = open_file(&path).map_err(|e| err(&e))?;
        let snapshot = Snapshot::of(&db)?;
        // The old snapshot's tables go before the old database.
        self.snapshot = snapshot;
        self.db = db;
        self.handle = handle;
        Ok(())
    }
}

/// Copy every row of table `def` from `from` into `to`, `REWRITE_ROWS` per
/// transaction (not durable: the caller's last commit makes them so).
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::MemoryDb;

    /// Every row of every table, as the seam shows it.
    fn dump(db: &dyn IndexDb) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut rows = Vec::new();
        for t in Table::ALL {
            for row in db.range(t, Bound::Unbounded, Bound::Unbounded).unwrap() {
                let (k, v) = row.unwrap();
                rows.push((t, k, v));
            }
        }
        rows
    }

    /// The file and the map in memory answer alike: the same writes make
    /// the same rows, point reads and ranges agree (numbers in numeric
    /// order, text in byte order), and a reopened file holds what was
    /// committed.
    #[test]
    fn the_file_and_the_map_behind_the_seam_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let mut file = RedbIndex::open(&path).unwrap();
        let mut memory = MemoryDb::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20 {
            let mut writes = Vec::new();
            for _ in 0..50 {
                let t = Table::ALL[(next() % 9) as usize];
                let n = next() % 300;
                let key = match t {
                    Table::Seqs | Table::Peers => be(n).to_vec(),
                    Table::Hashes => vec![(n % 7) as u8; 33],
                    _ => format!("d{}/f{n}", n % 5).into_bytes(),
                };
                let value = match t {
                    Table::Meta => be(next()).to_vec(),
                    Table::Seqs => format!("path {n}").into_bytes(),
                    Table::Hashes => Vec::new(),
                    _ => n.to_le_bytes().repeat((n % 3) as usize),
                };
                writes.push(match next() % 10 {
                    0..=6 => Write::Put(t, key, value),
                    7 | 8 => Write::Delete(t, key),
                    _ if round % 5 == 4 => Write::Clear(t),
                    _ => Write::Delete(t, key),
                });
            }
            file.commit(writes.clone(), false).unwrap();
            memory.commit(writes, false).unwrap();
            assert_eq!(dump(&file), dump(&memory), "round {round}");
            for t in Table::ALL {
                let (lo, hi) = match t {
                    Table::Seqs | Table::Peers => (be(40).to_vec(), be(200).to_vec()),
                    Table::Hashes => (vec![2u8; 33], vec![5u8; 33]),
                    _ => (b"d1".to_vec(), b"d3/f2".to_vec()),
                };
                let read = |db: &dyn IndexDb| -> Vec<(Vec<u8>, Vec<u8>)> {
                    db.range(t, Bound::Included(&lo), Bound::Excluded(&hi))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect()
                };
                assert_eq!(read(&file), read(&memory), "{t:?} round {round}");
                assert_eq!(file.get(t, &lo).unwrap(), memory.get(t, &lo).unwrap());
            }
        }
        file.commit(vec![], true).unwrap();
        let kept = dump(&file);
        drop(file);
        assert_eq!(dump(&RedbIndex::open(&path).unwrap()), kept);
    }
}

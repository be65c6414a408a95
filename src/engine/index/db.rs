//! The seam between the index and the database that keeps it: a few
//! tables of byte keys and values, read in the state of the last commit,
//! changed only by a commit of a whole batch. The index (`tables.rs`,
//! `query.rs`) keeps the rules, the pending changes and the sums; a
//! database behind this trait keeps bytes. The database file is one
//! (`fs::index_db`), the map in memory (`memory.rs`) another, for tests.
//!
//! Owns: the trait, the tables' names and key encodings, `OnDisk` and
//! `IndexError`.
//! Must not: do IO itself, or know what a record means.

use std::ops::Bound;
use std::path::Path;

/// What went wrong with the index's database.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("index database: {0}")]
    Db(String),
    #[error("cannot write the index to a new file {path}: {reason}")]
    Rewrite { path: String, reason: String },
}

/// The tables of the index, each a sorted map from byte keys to byte
/// values. Keys and values that are numbers are 8 big-endian bytes
/// (`be`), so that their byte order is their numeric order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Path → record (`codec.rs`).
    Entries,
    /// Sequence number → the path it last changed.
    Seqs,
    /// Content hash then path → nothing: live files by content.
    Hashes,
    /// Folder path ("" for the root) → its digest sum.
    Dirs,
    /// Name → number: the index's counters and identity.
    Meta,
    /// Peer device id → how far its index was taken.
    Peers,
    /// Setting's name → its bytes.
    Settings,
    /// The install journal: path → the version about to be put in place.
    Installing,
    /// Path → the version this disk held when an exclusion came.
    Held,
}

impl Table {
    pub const ALL: [Table; 9] = [
        Table::Entries,
        Table::Seqs,
        Table::Hashes,
        Table::Dirs,
        Table::Meta,
        Table::Peers,
        Table::Settings,
        Table::Installing,
        Table::Held,
    ];
}

/// A number as a key or value: 8 big-endian bytes.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The number in `b` (8 big-endian bytes), if it is one.
pub fn from_be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// One change of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    /// Every row of the table goes.
    Clear(Table),
}

/// Rows of a range read, in key order.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), IndexError>> + 'a>;

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

/// A database the index is kept in. Reads see the last commit; a commit
/// applies its writes in order, all or none, durably when asked.
pub trait IndexDb: Send {
    /// The value at `key` in `table`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError>;

    /// The rows of `table` between `lo` and `hi`, in key order.
    fn range(&self, table: Table, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<Rows<'_>, IndexError>;

    /// Apply `writes`, in one transaction; `durable`: on disk when this
    /// returns.
    fn commit(&mut self, writes: Vec<Write>, durable: bool) -> Result<(), IndexError>;

    /// Where the database's file stands against its path (`Memory`: it
    /// has none).
    fn on_disk(&self) -> Result<OnDisk, IndexError>;

    /// The database's file (`None` in memory).
    fn path(&self) -> Option<&Path>;

    /// Write everything committed to a new file at the database's path and
    /// go on with that one (the old one was removed or moved under the
    /// running node). Nothing to do in memory.
    fn rewrite(&mut self) -> Result<(), IndexError>;
}

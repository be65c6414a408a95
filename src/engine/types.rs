//! The engine's inputs from the disk (`Observed`) and its outputs
//! (`Command`, `Action`): plain data, no behaviour.

use crate::wire::{Entry, Hash, Kind, Message, NodeId, RelPath};

/// What a scan found at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub path: RelPath,
    pub kind: Kind,
    /// Bytes (0 for directories).
    pub size: u64,
    /// The file's mtime in nanoseconds since the epoch (0 for directories).
    pub mtime: i64,
    /// The content hash (zero for directories).
    pub hash: Hash,
}

/// What a scan saw of DIR itself, for the mass-delete guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    /// DIR holds at least one synced file or folder.
    Present,
    /// DIR exists but holds nothing dirsync syncs.
    Empty,
    /// DIR cannot be read as a directory (the reason).
    Missing(String),
}

/// One look at the disk: what was found under `roots` (`None`: the whole
/// tree), the paths that could not be observed (a file being written, an
/// unreadable folder: their subtrees are unknown, not gone), and the state
/// of DIR itself.
#[derive(Debug, Clone)]
pub struct Scan {
    pub roots: Vec<Option<RelPath>>,
    pub found: Vec<Observed>,
    pub failed: Vec<RelPath>,
    pub dir: DirState,
}

/// A change to make on this node's disk because a peer's version won.
/// Each carries what the path must still hold locally (`local`) so the node
/// never overwrites or deletes a change the user made meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create directory `entry.path` (and its parents).
    MakeDir { entry: Entry },
    /// Remove `local` (a file, or an empty directory): `entry` is the winning
    /// tombstone.
    Delete { entry: Entry, local: Entry },
    /// Give `entry.path` the metadata of `entry`; its content is already here.
    SetMtime { entry: Entry, local: Entry },
    /// Move our file `from` to `entry.path` (its content is `entry`'s), and
    /// record `from_tombstone`, the peer's deletion of `from`.
    Rename {
        from: Entry,
        from_tombstone: Entry,
        entry: Entry,
        local: Option<Entry>,
    },
    /// Copy our file `from` to `entry.path` (its content is `entry`'s).
    Copy { from: Entry, entry: Entry, local: Option<Entry> },
    /// Keep our losing version `from` of a concurrent edit as the new file
    /// `copy` (a conflict copy; its path must be free), then apply `then`,
    /// the winning version of `from.path`.
    ConflictCopy { from: Entry, copy: Entry, then: Entry },
}

impl Action {
    /// The version this action installs.
    pub fn entry(&self) -> &Entry {
        match self {
            Action::MakeDir { entry }
            | Action::Delete { entry, .. }
            | Action::SetMtime { entry, .. }
            | Action::Rename { entry, .. }
            | Action::Copy { entry, .. }
            | Action::ConflictCopy { copy: entry, .. } => entry,
        }
    }

    /// A word for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::MakeDir { .. } => "mkdir",
            Action::Delete { entry, .. } if entry.kind == Kind::Dir => "rmdir",
            Action::Delete { .. } => "delete",
            Action::SetMtime { .. } => "touch",
            Action::Rename { .. } => "rename",
            Action::Copy { .. } => "copy",
            Action::ConflictCopy { .. } => "conflict-copy",
        }
    }
}

/// What the engine asks the node to do.
// `Apply` carries up to four entries; commands live only until the node
// carries them out, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send a control message.
    Send { peer: NodeId, msg: Message },
    /// Send `entry`'s content to `peer`: whole, or with `base` = (hash of
    /// the peer's copy, its signature) as a delta against that copy.
    SendContent {
        peer: NodeId,
        entry: Entry,
        base: Option<(Hash, Vec<u8>)>,
    },
    /// Compute the signature of our copy `base` and ask `peer` for `want` as
    /// a delta against it (`Message::WantDelta`); if `base` changed
    /// meanwhile, ask for the whole file (`Message::Want`).
    RequestDelta { peer: NodeId, want: Entry, base: Entry },
    /// Change the disk; report back through `Engine::handle_action_done`.
    Apply { peer: NodeId, action: Action },
    /// Close the connection with `peer`.
    Close { peer: NodeId, reason: String },
    /// Stop syncing: DIR looks gone (the reason says why). Close every
    /// connection, stop announcing, and rescan until DIR is back.
    Suspend { reason: String },
    /// DIR is back: sync again.
    Resume,
}

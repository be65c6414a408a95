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
}

impl Action {
    /// The version this action installs.
    pub fn entry(&self) -> &Entry {
        match self {
            Action::MakeDir { entry }
            | Action::Delete { entry, .. }
            | Action::SetMtime { entry, .. }
            | Action::Rename { entry, .. }
            | Action::Copy { entry, .. } => entry,
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
        }
    }
}

/// What the engine asks the node to do.
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
}

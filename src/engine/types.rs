//! The engine's inputs from the disk (`Observed`) and its outputs
//! (`Command`, `Action`): plain data, no behaviour.

use crate::wire::{Entry, Hash, Kind, Message, NodeId, RelPath, Xattrs};

/// What a scan found at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub path: RelPath,
    pub kind: Kind,
    /// Bytes (0 for directories).
    pub size: u64,
    /// The file's mtime in nanoseconds since the epoch (0 for directories).
    pub mtime: i128,
    /// The content hash (zero for directories).
    pub hash: Hash,
    /// A folder that holds at least one entry of any kind (temp files,
    /// symlinks and ignored names count too); false for files.
    pub occupied: bool,
    /// A file with an execute bit set.
    pub exec: bool,
    /// The permission bits of a file or folder (at most 0o777); 0 when
    /// not looked at (`--no-perms`) and for symlinks.
    pub mode: u32,
    /// A symlink's target (`None` for anything else).
    pub target: Option<String>,
    /// A file's or folder's `user.` extended attributes; `None` when not
    /// looked at (without `--xattrs`) and for symlinks.
    pub xattrs: Option<Xattrs>,
    /// Its inode and change time, for a file (`None` for a folder).
    pub stat: Option<Stat>,
}

/// What the engine tells a scan about a path before it is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
// One lives for one call of the scan's lookup: boxing the entry would cost
// an allocation per path looked at.
#[allow(clippy::large_enum_variant)]
pub enum Look {
    /// Not synced here (ignored or excluded): not looked at, nor anything
    /// below it.
    Skip,
    /// Look at it; what the index knows of it, so an unchanged file is not
    /// hashed again.
    At(Option<Known>),
}

impl Observed {
    /// True if what the disk shows here is the live version `e`: a folder
    /// of that mode, a file of that size, mtime, content and mode, a
    /// symlink of that target and mtime; files and folders with its
    /// extended attributes, where both are known (a version that does not
    /// know them counts as having none).
    pub fn shows(&self, e: &Entry) -> bool {
        // The mode `e` puts on disk; not looked at: the execute bit alone.
        let mode = || self.mode == 0 || self.mode == mode_on_disk(e);
        let xattrs = || {
            self.xattrs
                .as_ref()
                .is_none_or(|x| e.xattrs.as_ref().map_or(x.0.is_empty(), |ex| ex == x))
        };
        !e.deleted
            && e.kind == self.kind
            && match self.kind {
                Kind::Dir => mode() && xattrs(),
                Kind::File => {
                    e.size == self.size && e.mtime == self.mtime && e.hash == self.hash && e.exec == self.exec && mode() && xattrs()
                }
                Kind::Symlink => e.hash == self.hash && e.mtime == self.mtime,
            }
    }
}

/// The mode of a folder with no known mode, and of one with no version of
/// its own (a container, see `Engine::deleted_ancestors`).
pub const DEFAULT_FOLDER_MODE: u32 = 0o755;

/// The permission bits a version puts on disk: its mode, or where that is
/// unknown (0: from a node of protocol 4 or one with `--no-perms`)
/// 0o644, 0o755 with the execute bit, 0o755 for a folder. The owner
/// keeps read (and for a folder write and search) whatever the peer says,
/// so a path is never unreadable here because it was there.
pub fn mode_on_disk(e: &Entry) -> u32 {
    let mode = match (e.mode, e.kind) {
        (0, Kind::Dir) => DEFAULT_FOLDER_MODE,
        (0, _) if e.exec => 0o755,
        (0, _) => 0o644,
        (m, _) => m & 0o777,
    };
    match e.kind {
        Kind::Dir => mode | 0o700,
        _ => mode | 0o400,
    }
}

/// A file's inode number and change time (ns). The change time moves with
/// every write and every metadata change, and cannot be set back: a file
/// rewritten behind dirsync's back with its size and mtime restored still
/// shows a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub ctime: i128,
}

/// What the index knows of a path, for a scan: its entry, and the file's
/// `Stat` when this node last looked at it (`None`: never, e.g. a file
/// received since).
pub type Known = (Entry, Option<Stat>);

/// What a scan saw of DIR itself, for the mass-delete guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    /// DIR is a readable directory holding its marker, `DIR/.dirsync`.
    Present,
    /// DIR cannot be read as a directory, or its marker is gone (an
    /// unmounted disk looks like this): the reason.
    Missing(String),
}

/// One look at the disk: what was found under `roots` (`None`: the whole
/// tree) and directly in the folders `shallow` (their subfolders' contents
/// are looked at in other scans), the paths that could not be observed (a
/// file being written, an unreadable folder: their subtrees are unknown,
/// not gone), and the state of DIR itself.
#[derive(Debug, Clone)]
pub struct Scan {
    pub roots: Vec<Option<RelPath>>,
    pub shallow: Vec<Option<RelPath>>,
    pub found: Vec<Observed>,
    /// Paths that could not be read (a permission, an I/O error): unknown
    /// here, and reported until a look reads them (`Engine::unreadable`).
    pub failed: Vec<RelPath>,
    /// Large files queued to be hashed: unknown until then, nothing wrong.
    pub hashing: Vec<RelPath>,
    pub dir: DirState,
    pub extent: Extent,
}

/// How much of the tree a scan is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Some paths (a watcher event, a retry), or the whole tree at once
    /// (a root of `None`).
    Paths,
    /// A part of a look at the whole tree, taken folder by folder so that
    /// it never holds the whole tree in memory; `last` on the last part.
    TreePart { last: bool },
}

/// A change to make on this node's disk because a peer's version won.
/// Each carries what the path must still hold locally (`local`) so the node
/// never overwrites or deletes a change the user made meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create directory `entry.path` (and its parents) with its mode,
    /// replacing `local`, what the path holds here, if any (a folder
    /// already there just takes the mode).
    MakeDir { entry: Entry, local: Option<Entry> },
    /// Make symlink `entry.path` to `entry.target`, replacing `local`.
    MakeLink { entry: Entry, local: Option<Entry> },
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

impl Command {
    /// The peer a command sends something to, or is about.
    pub fn peer(&self) -> Option<NodeId> {
        match self {
            Command::Send { peer, .. }
            | Command::SendContent { peer, .. }
            | Command::RequestDelta { peer, .. }
            | Command::Apply { peer, .. }
            | Command::Close { peer, .. }
            | Command::Abandon { peer, .. }
            | Command::SendPieceMap { peer, .. }
            | Command::SendPiece { peer, .. }
            | Command::FinishPieces { peer, .. } => Some(*peer),
            Command::Rescan { .. }
            | Command::RescanTree
            | Command::SweepTemp
            | Command::SaveIndex
            | Command::PruneTrash
            | Command::RemoveEmptyDirs { .. }
            | Command::ReloadIgnore
            | Command::Suspend { .. }
            | Command::Resume
            | Command::StartPieces { .. }
            | Command::EndPieces { .. } => None,
        }
    }
}

impl Action {
    /// The version this action installs.
    pub fn entry(&self) -> &Entry {
        match self {
            Action::MakeDir { entry, .. }
            | Action::MakeLink { entry, .. }
            | Action::Delete { entry, .. }
            | Action::SetMtime { entry, .. }
            | Action::Rename { entry, .. }
            | Action::Copy { entry, .. }
            | Action::ConflictCopy { copy: entry, .. } => entry,
        }
    }

    /// The live version this action puts on disk (not a deletion's
    /// tombstone): what the install journal records before it runs.
    pub fn installs(&self) -> Option<&Entry> {
        Some(self.entry()).filter(|e| !e.deleted)
    }

    /// A word for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::MakeDir { .. } => "mkdir",
            Action::MakeLink { .. } => "symlink",
            Action::Delete { entry, .. } if entry.kind == Kind::Dir => "rmdir",
            Action::Delete { .. } => "delete",
            Action::SetMtime { .. } => "touch",
            Action::Rename { .. } => "rename",
            Action::Copy { .. } => "copy",
            Action::ConflictCopy { .. } => "conflict-copy",
        }
    }
}

/// Why a disk `Action` failed, as far as the engine's decisions go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The path no longer holds what the action expected: the user changed
    /// it meanwhile, and that change wins.
    #[error("{0}")]
    Changed(String),
    /// The path holds a file some process has open for writing: it is not
    /// replaced under its writer (the local version stands for now).
    #[error("{0}")]
    Busy(String),
    /// A folder to remove still holds something.
    #[error("{0}")]
    NotEmpty(String),
    /// Anything else (the reason).
    #[error("{0}")]
    Failed(String),
}

/// How a file's content travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// The whole file (`ContentMode::Full` on the wire).
    Full,
    /// As a delta against our copy.
    Delta,
}

/// What the node does with the content a peer streams, decided once per
/// frame (`Engine::handle_file_start`, `handle_chunk`, `handle_file_end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receive {
    /// Keep it: the path must still hold `expected` when it is installed.
    Write { expected: Option<Entry> },
    /// Throw it away (not asked for, superseded meanwhile, or out of the
    /// protocol's order, when a `Command::Close` ends the connection too):
    /// the reason.
    Drop { reason: String },
}

/// What the node does with a `Piece` frame (`Engine::handle_piece`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceFrame {
    /// Write it into the swarm's temp file, in the piece that starts at
    /// `start` in the file and is `piece_len` bytes long.
    Write { start: u64, piece_len: u64 },
    /// Ignore it (a late answer, or a broken one: a `Command::Close`
    /// follows then).
    Drop,
}

/// A piece the node has taken in whole (`Engine::handle_piece_done`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceArrival {
    /// Its bytes are in the temp file, with this chaining value.
    Value(crate::wire::pieces::PieceValue),
    /// The sender broke off a piece and started another in its middle.
    Broken,
    /// Writing it here failed (the reason).
    Failed(String),
}

/// Content this node could not send to a peer as the engine asked: found
/// by its writer, or when a piece map was made (`Engine::handle_unsent`
/// decides what goes instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsent {
    /// Our copy no longer holds `entry` (changed since the index said so).
    CopyChanged { entry: Entry },
    /// The peer's signature of its copy, for a delta, does not parse.
    BadSignature { entry: Entry, reason: String },
    /// Our copy `base`, to sign for a delta of `want`, changed meanwhile.
    BaseChanged { want: Entry, base: Entry },
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
    /// Stop writing the file `peer` is sending: a newer version or a
    /// deletion made it unwanted (later frames of it are dropped).
    Abandon { peer: NodeId, reason: String },
    /// Look at these paths on disk again (and all below them).
    Rescan { paths: Vec<RelPath> },
    /// Look at the whole tree again.
    RescanTree,
    /// Remove the temp files of receives that were abandoned.
    SweepTemp,
    /// Commit the index's changes.
    SaveIndex,
    /// Drop what is older than `--trash-days` from the trash.
    PruneTrash,
    /// Remove these folders, innermost first, each only if it is empty,
    /// stopping at the first that is not: their deletion is recorded and
    /// the last thing they held is gone.
    RemoveEmptyDirs { dirs: Vec<RelPath> },
    /// The index holds another `.dirsyncignore` than the rules came from:
    /// read it again and rescan everything.
    ReloadIgnore,
    /// Stop syncing: DIR looks gone (the reason says why). Close every
    /// connection, stop announcing, and rescan until DIR is back.
    Suspend { reason: String },
    /// DIR is back: sync again.
    Resume,
    /// Fetch `entry` in pieces (`engine::swarm`): make its temp file,
    /// which replaces the path only if it still holds `expected`.
    StartPieces { entry: Entry, expected: Option<Entry> },
    /// Compute the piece map of our copy of `entry` (pieces of
    /// `piece_size`) and send it to `peer`, or `Unavailable` if our copy
    /// changed.
    SendPieceMap { peer: NodeId, entry: Entry, piece_size: u64 },
    /// Send `peer` piece `index` of `entry` (`len` bytes at `offset`), from
    /// our copy, or from the temp file of the swarm fetching it.
    SendPiece {
        peer: NodeId,
        entry: Entry,
        index: u64,
        offset: u64,
        len: u64,
        from_temp: bool,
    },
    /// Every piece of the swarm for `path` is here and verified: make its
    /// temp file durable and install it, as content received from `peer`.
    FinishPieces { path: RelPath, peer: NodeId },
    /// The swarm for `path` is over (installed, superseded or given up):
    /// drop its temp file.
    EndPieces { path: RelPath },
}

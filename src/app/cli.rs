//! Command-line flags (argh) and their validation into a `node::Config`.
//!
//! Owns: what each flag means and every check on user input, so a mistake
//! gives one clear line instead of a panic. Must not: start anything.

use crate::fs::trash::TrashMax;
use crate::node::status::Control;
use crate::node::{Config, Counters};
use crate::transport::key::{ClusterKey, KeyError, KEY_FILE_ENV};
use crate::wire::{NodeId, STATE_DIR_NAME};
use argh::{EarlyExit, FromArgs};
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Keep DIR identical on every host of the LAN that runs dirsync on it.
///
/// Hosts find each other by UDP broadcast, keep one TCP connection per pair,
/// and send only changed bytes. Last-modified wins.
#[derive(FromArgs, Debug)]
#[argh(
    example = "Sync ~/shared with every host on the LAN running the same:\n  $ dirsync ~/shared",
    example = "Two nodes on one host, for a try-out:\n  $ dirsync /tmp/a -l 6001 --broadcast-addr 127.255.255.255\n  $ dirsync /tmp/b -l 6002 --broadcast-addr 127.255.255.255",
    example = "Peers broadcast cannot reach (another subnet, a VPN), no broadcast at all:\n  $ dirsync ~/shared --no-discovery --peer 10.8.0.2:6000 --peer nas.lan:6000",
    example = "Ask the running node how it is doing (peers, pending transfers, tree digest):\n  $ dirsync status ~/shared",
    note = "Paths matching DIR/.dirsyncignore (gitignore syntax) stay local on every host; the file itself syncs. Paths matching STATE_DIR/exclude (default DIR/.dirsync/exclude, same syntax, never synced) are not synced to or from this host and stay on the others. Logs go to stderr; set RUST_LOG=debug for more. SIGINT or SIGTERM stop the node cleanly (exit 0); a second one stops it at once. A directory named like a command is given as ./status.",
    note = "Exit codes: 0 success (also after SIGINT/SIGTERM), 1 runtime error (a port in use, an unwritable state directory), 2 bad usage."
)]
pub struct Args {
    /// the directory to keep in sync (must exist)
    #[argh(positional)]
    pub dir: Option<PathBuf>,

    /// UDP port for discovery broadcasts, the same on every host (default 5000)
    #[argh(option, short = 'b', default = "5000")]
    pub broadcast_port: u16,

    /// TCP port this node listens on for peers (default 6000)
    #[argh(option, short = 'l', default = "6000")]
    pub listen_port: u16,

    /// where dirsync keeps its index and state, never synced (default DIR/.dirsync)
    #[argh(option, short = 's')]
    pub signature_dir: Option<PathBuf>,

    /// address discovery broadcasts go to (default 255.255.255.255)
    #[argh(option, default = "Ipv4Addr::BROADCAST")]
    pub broadcast_addr: Ipv4Addr,

    /// seconds between full rescans that catch what the watcher missed (default 60)
    #[argh(option, default = "60")]
    pub rescan_interval: u64,

    /// a peer to keep connected, as HOST:PORT (its TCP listen port), for
    /// peers broadcast cannot reach; repeatable
    #[argh(option)]
    pub peer: Vec<String>,

    /// turn broadcast discovery off: send no announcements, hear none
    /// (use with --peer)
    #[argh(switch)]
    pub no_discovery: bool,
    /// cluster key file (64 hex digits, from `dirsync keygen FILE`): authenticate and encrypt every connection; only nodes with the same key sync (default: $DIRSYNC_KEY_FILE, else none)
    #[argh(option)]
    pub key_file: Option<PathBuf>,

    /// days to keep files a peer's change deleted or replaced, in DIR/.dirsync/trash (see `dirsync trash`); 0 keeps none (default 7)
    #[argh(option, default = "7")]
    pub trash_days: u32,

    /// the most the trash may hold, as a share of the filesystem (5%) or a size (2GiB); past it the oldest go (default 5%)
    #[argh(option, default = "TrashMax::default()", arg_name = "SIZE")]
    pub trash_max: TrashMax,

    /// do not carry permission bits, only the execute bit (for filesystems that do not keep modes, such as FAT or some network mounts); by default every rwx bit of files and folders travels
    #[argh(switch)]
    pub no_perms: bool,

    /// carry extended attributes of the user. namespace too (values up to 1 KiB, 4 KiB per path, as Syncthing); off by default. Every host that should keep them needs it
    #[argh(switch)]
    pub xattrs: bool,

    /// send file content at most this fast, across all peers, e.g. 20MB/s, 512KiB/s, 100Mbit/s (default: no limit); changes are announced at once whatever the limit
    #[argh(option, from_str_fn(rate_flag), arg_name = "RATE")]
    pub max_send_rate: Option<u64>,

    /// take in file content at most this fast, across all peers (same units; default: no limit)
    #[argh(option, from_str_fn(rate_flag), arg_name = "RATE")]
    pub max_recv_rate: Option<u64>,

    /// where the local dashboard (a web page, and /metrics) listens (default 127.0.0.1:8385: this host only); `dirsync status` prints its address with the token it needs
    #[argh(option, arg_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,

    /// serve no dashboard
    #[argh(switch)]
    pub no_dashboard: bool,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// Show what the dirsync node running on DIR is doing: its peers (id,
/// address, synchronized or not), pending transfers, last error, and its
/// tree digest next to each peer's, equal when both hold the same tree.
#[derive(FromArgs, Debug)]
#[argh(
    example = "The node syncing the current directory:\n  $ dirsync status",
    example = "Compare trees across machines: run on each and compare the tree lines:\n  $ dirsync status ~/shared",
    note = "Exit codes: 0 the node answered, 1 an error, 2 bad usage, 3 no node runs for DIR."
)]
pub struct StatusArgs {
    /// the synced directory (default: the current one)
    #[argh(positional, default = "PathBuf::from(\".\")")]
    pub dir: PathBuf,

    /// the node's state directory, if it was started with -s (default DIR/.dirsync)
    #[argh(option, short = 's')]
    pub signature_dir: Option<PathBuf>,

    /// print the status as JSON
    #[argh(switch)]
    pub json: bool,
}

impl StatusArgs {
    /// Where the node keeps its state, hence its control socket.
    pub fn state_dir(&self) -> Result<PathBuf, CliError> {
        if let Some(s) = &self.signature_dir {
            if s.as_os_str().is_empty() {
                return Err(CliError::EmptyStateDir);
            }
            return Ok(resolve(s));
        }
        Ok(canonical_dir(&self.dir)?.join(STATE_DIR_NAME))
    }

    /// The default state directory of DIR when DIR itself is gone (a node
    /// whose disk was unmounted still answers, at its twin socket).
    pub fn state_dir_of_gone_dir(&self) -> PathBuf {
        resolve(&self.dir).join(STATE_DIR_NAME)
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// `dirsync DIR [flags]`: run a node.
    Run(Args),
    /// `dirsync status [DIR]`.
    Status(StatusArgs),
    /// `dirsync keygen FILE`
    Keygen(KeygenArgs),
    /// `dirsync trash [DIR]`
    Trash(TrashArgs),
    /// `dirsync conflicts [DIR]`
    Conflicts(ConflictsArgs),
}

/// Parse the words after the program name. A first word that is a command
/// (`status`) selects it; anything else is `dirsync DIR`.
pub fn parse(words: &[&str]) -> Result<Invocation, EarlyExit> {
    match words.first() {
        Some(&"status") => StatusArgs::from_args(&["dirsync", "status"], &words[1..]).map(Invocation::Status),
        Some(&KEYGEN) => KeygenArgs::from_args(&["dirsync", KEYGEN], &words[1..]).map(Invocation::Keygen),
        Some(&"trash") => TrashArgs::from_args(&["dirsync", "trash"], &words[1..]).map(Invocation::Trash),
        Some(&"conflicts") => ConflictsArgs::from_args(&["dirsync", "conflicts"], &words[1..]).map(Invocation::Conflicts),
        _ => Args::from_args(&["dirsync"], words).map(Invocation::Run),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("missing DIR: the directory to sync (see --help)")]
    MissingDir,
    #[error("{0}: no such directory")]
    NoSuchDir(String),
    #[error("{0}: not a directory")]
    NotADir(String),
    #[error("{0}: {1}")]
    Unreadable(String, std::io::Error),
    #[error("--{0} must be between 1 and 65535")]
    ZeroPort(&'static str),
    #[error("--signature-dir {0} lies inside DIR, where peers could overwrite it: put it outside DIR (or leave the default, DIR/{STATE_DIR_NAME})")]
    StateInsideDir(String),
    #[error("{0}: refusing to sync the root of the filesystem (it holds the whole machine, /proc and /sys included): give the directory to keep in sync")]
    RootDir(String),
    #[error("--signature-dir is empty: give a directory, or leave the flag out for the default DIR/{STATE_DIR_NAME}")]
    EmptyStateDir,
    #[error("--rescan-interval must be at least 1 second")]
    ZeroRescan,
    #[error("--peer {0}: expected HOST:PORT with a port between 1 and 65535")]
    BadPeer(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl Args {
    /// Check the flags and build the node's configuration.
    pub fn into_config(self) -> Result<Config, CliError> {
        let dir = self.dir.ok_or(CliError::MissingDir)?;
        let shown = dir.display().to_string();
        let meta = std::fs::metadata(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::NoSuchDir(shown.clone()),
            _ => CliError::Unreadable(shown.clone(), e),
        })?;
        if !meta.is_dir() {
            return Err(CliError::NotADir(shown));
        }
        let dir = dir.canonicalize().map_err(|e| CliError::Unreadable(shown.clone(), e))?;
        if dir.parent().is_none() {
            return Err(CliError::RootDir(shown));
        }
        if self.listen_port == 0 {
            return Err(CliError::ZeroPort("listen-port"));
        }
        if self.broadcast_port == 0 {
            return Err(CliError::ZeroPort("broadcast-port"));
        }
        if self.rescan_interval == 0 {
            return Err(CliError::ZeroRescan);
        }
        for p in &self.peer {
            let port = p.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none_or(|p| p == 0) {
                return Err(CliError::BadPeer(p.clone()));
            }
        }
        let default_state = dir.join(STATE_DIR_NAME);
        let state_dir = match self.signature_dir {
            None => default_state,
            Some(s) if s.as_os_str().is_empty() => return Err(CliError::EmptyStateDir),
            Some(s) => {
                // Resolved first, so `DIR/../DIR/x`, a symlink into DIR and
                // `..` through folders not made yet are all caught (issue 13).
                let canon = resolve(&s);
                if canon != default_state && canon.starts_with(&dir) {
                    return Err(CliError::StateInsideDir(s.display().to_string()));
                }
                canon
            }
        };
        let key_file = self
            .key_file
            .or_else(|| std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from));
        let key = key_file.as_deref().map(ClusterKey::load).transpose()?;
        if let Some(f) = key_file.as_deref().filter(|f| ClusterKey::file_is_shared(f)) {
            tracing::warn!(file = %f.display(), "the key file is readable by other users; chmod 600 it");
        }
        Ok(Config {
            dir,
            state_dir,
            listen_port: self.listen_port,
            broadcast_port: self.broadcast_port,
            broadcast_addr: self.broadcast_addr,
            node_id: random_node_id(),
            announce_interval: Duration::from_secs(2),
            rescan_interval: Duration::from_secs(self.rescan_interval),
            key,
            counters: Arc::new(Counters::default()),
            static_peers: self.peer,
            discovery: !self.no_discovery,
            control: Control::default(),
            disk_faults: Default::default(),
            trash_days: self.trash_days,
            trash_max: self.trash_max,
            perms: !self.no_perms,
            xattrs: self.xattrs,
            inline_hash_max: crate::fs::hashing::INLINE_HASH_MAX,
            max_send_rate: self.max_send_rate,
            max_recv_rate: self.max_recv_rate,
            dashboard: match self.no_dashboard {
                true => None,
                false => Some(self.dashboard.unwrap_or(crate::app::dashboard::DEFAULT_ADDR_V4)),
            },
            piece_size: crate::wire::pieces::PIECE_SIZE,
            corrupt_pieces: false,
        })
    }
}

/// A `--max-*-rate` value in bytes per second.
fn rate_flag(text: &str) -> Result<u64, String> {
    crate::transport::rate::parse_rate(text).map_err(|e| e.to_string())
}

/// 64 random bits from the standard library's per-process hash keys, mixed
/// with the time and pid.
fn random_node_id() -> NodeId {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    NodeId(h.finish())
}

/// Write a new random cluster key to FILE, for `--key-file` on every node.
#[derive(FromArgs, Debug)]
#[argh(
    example = "Make a key, copy it to every host (scp, a USB stick), start each node with it:\n  $ dirsync keygen ~/.dirsync.key\n  $ dirsync ~/shared --key-file ~/.dirsync.key",
    note = "The file gets mode 0600 and 64 hex digits. An existing file is never overwritten."
)]
pub struct KeygenArgs {
    /// where to write the key (must not exist)
    #[argh(positional)]
    pub file: PathBuf,
}

impl KeygenArgs {
    /// Write the key; returns its fingerprint (safe to show).
    pub fn run(&self) -> Result<String, CliError> {
        Ok(ClusterKey::generate_file(&self.file)?.fingerprint())
    }
}

/// List the files kept in DIR's trash: what a peer's change deleted or
/// replaced on this host, with the path each had and when it went. Works
/// from the disk alone, with or without a running node.
#[derive(FromArgs, Debug)]
#[argh(
    example = "What peers deleted or replaced here lately:\n  $ dirsync trash ~/shared",
    example = "Get one back (it then syncs like any new file):\n  $ cp ~/shared/.dirsync/trash/notes~20261201-101500.txt ~/shared/notes.txt",
    note = "Files stay for --trash-days (default 7) and are then removed by the running node."
)]
pub struct TrashArgs {
    /// the synced directory (default: the current one)
    #[argh(positional, default = "PathBuf::from(\".\")")]
    pub dir: PathBuf,

    /// print the list as JSON
    #[argh(switch)]
    pub json: bool,
}

impl TrashArgs {
    /// The trash folder of DIR.
    pub fn trash_dir(&self) -> Result<PathBuf, CliError> {
        Ok(crate::fs::trash::trash_dir(&canonical_dir(&self.dir)?))
    }
}

/// List the conflict copies in DIR: where two hosts changed the same file
/// at once, the losing version is kept next to it as
/// `NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE-HASH.EXT`. Shows the file each
/// lost against, when the losing version was written (UTC) and by which
/// device. Settle one with --keep (the copy replaces the file) or --drop
/// (the copy goes); either is an ordinary change that every host follows.
/// Works from the disk alone, with or without a running node.
#[derive(FromArgs, Debug)]
#[argh(
    example = "What conflicts are there?\n  $ dirsync conflicts ~/shared",
    example = "The other version was right: keep it as the real file\n  $ dirsync conflicts ~/shared --keep 'docs/report.sync-conflict-20261125-143000-a1b2c3d4-5c2e6e6d.txt'",
    example = "The current file is right: drop the copy\n  $ dirsync conflicts ~/shared --drop 'docs/report.sync-conflict-20261125-143000-a1b2c3d4-5c2e6e6d.txt'",
    note = "COPY is a path inside DIR (relative to DIR, or absolute)."
)]
pub struct ConflictsArgs {
    /// the synced directory (default: the current one)
    #[argh(positional, default = "PathBuf::from(\".\")")]
    pub dir: PathBuf,

    /// print the list as JSON
    #[argh(switch)]
    pub json: bool,

    /// keep this conflict copy: it replaces the file it lost against
    #[argh(option, arg_name = "COPY")]
    pub keep: Option<PathBuf>,

    /// drop this conflict copy: delete it
    #[argh(option, arg_name = "COPY")]
    pub drop: Option<PathBuf>,
}

impl ConflictsArgs {
    /// DIR, absolute.
    pub fn root(&self) -> Result<PathBuf, CliError> {
        canonical_dir(&self.dir)
    }
}

/// Command words dispatched before the main `dirsync DIR` flags (a
/// directory literally named like one is given as `./keygen`).
pub const KEYGEN: &str = "keygen";

/// `dir` made absolute with symlinks resolved, or why it cannot be.
fn canonical_dir(dir: &Path) -> Result<PathBuf, CliError> {
    let shown = dir.display().to_string();
    dir.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CliError::NoSuchDir(shown),
        _ => CliError::Unreadable(shown, e),
    })
}

/// Where `path` leads: the canonical form (symlinks resolved) of the part
/// that exists, then the rest with `.` and `..` applied as written, the
/// way creating it would go.
fn resolve(path: &Path) -> PathBuf {
    let abs = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let parts: Vec<Component> = abs.components().collect();
    // The longest prefix that exists, canonical; then the rest as written.
    let exists = (0..=parts.len())
        .rev()
        .find(|&n| std::fs::symlink_metadata(parts[..n].iter().collect::<PathBuf>()).is_ok())
        .unwrap_or(0);
    let prefix: PathBuf = parts[..exists].iter().collect();
    let mut out = prefix.canonicalize().unwrap_or(prefix);
    for part in &parts[exists..] {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_dispatch_and_dirs_named_like_them_still_sync() {
        assert!(matches!(parse(&["keygen", "k"]), Ok(Invocation::Keygen(k)) if k.file.as_os_str() == "k"));
        assert!(matches!(parse(&["d", "--max-send-rate", "20MB/s"]), Ok(Invocation::Run(a)) if a.max_send_rate == Some(20_000_000)));
        assert!(matches!(parse(&["d", "--max-recv-rate", "100Mbit/s"]), Ok(Invocation::Run(a)) if a.max_recv_rate == Some(12_500_000)));
        let bad = parse(&["d", "--max-send-rate", "fast"]).unwrap_err();
        assert!(
            bad.status.is_err() && bad.output.contains("give a number and a unit"),
            "{}",
            bad.output
        );
        assert!(matches!(parse(&["./keygen"]), Ok(Invocation::Run(a)) if a.dir.as_deref() == Some(std::path::Path::new("./keygen"))));
        assert!(
            matches!(parse(&["d", "--key-file", "k"]), Ok(Invocation::Run(a)) if a.key_file.as_deref() == Some(std::path::Path::new("k")))
        );
        assert!(parse(&["keygen"]).is_err(), "keygen without a file");
    }
}

//! dirsync keeps one directory identical on every host of a LAN that runs it.
//!
//! # Layout
//!
//! - [`wire`]: every message and the frame codec (pure; caps every size).
//! - [`engine`]: the sync state machine (no IO, no clock): inputs in,
//!   [`engine::Command`]s out.
//! - [`index`]: path → version, the winner rule, the index file.
//! - [`version`]: version vectors (sequential or concurrent edits).
//! - [`conflict`]: conflict-copy names and entries.
//! - [`delta`]: segmented fast_rsync signatures, diffs and patches.
//! - [`state`]: the device id and loading (or rebuilding) the index.
//! - [`store`]: the filesystem seam: scans, atomic writes, safety checks.
//! - [`receive`]: assembling and verifying one incoming file.
//! - [`secure`]: the transport under every connection: plain, or Noise
//!   with the cluster key ([`key`]: key files, fingerprints).
//! - [`conn`]: a connection's handshake, reader and writer tasks.
//! - [`limits`]: caps on peers and on connections in their handshake.
//! - [`discovery`]: UDP broadcast announcements.
//! - [`net`]: the `Net` trait (sockets, tasks, clock) and its async-std
//!   implementation; `sim/` implements it over turmoil.
//! - [`node`]: the event loop that drives the engine through all of these.
//! - [`watcher`]: notify → local change events.
//! - [`ignore_rules`]: `.dirsyncignore` (gitignore syntax) → which paths
//!   stay local; the engine applies them.
//! - [`static_peers`]: `--peer` targets and their reconnection backoff.
//! - [`control`]: `dirsync status`: the status report, the control socket
//!   in the state directory and its client.
//! - [`progress`]: the progress display (a terminal) or progress log lines.
//! - [`cli`]: flags → validated `node::Config`, and the command words
//!   (`status`, `keygen`).
//! - `fuzz` (tests only): bounded fuzzing of every input a peer reaches.
//!
//! See docs/ARCHITECTURE.md for how they fit together and docs/PROTOCOL.md
//! for the wire format.

pub mod app;
pub mod engine;
pub mod fs;
pub mod node;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod fuzz;

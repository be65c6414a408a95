//! dirsync keeps one directory identical on every host of a LAN that runs it.
//!
//! # Layers
//!
//! The folders are the architecture. Each depends only on those above it
//! in this list; nothing depends on `app`.
//!
//! - [`wire`]: every message, the frame codec and version vectors (pure
//!   and total: any bytes decode to a message or an error).
//! - `engine` (crate-private): the sync state machine and its pure rules (the winner,
//!   conflicts, ignore matching, data safety). No IO, no clock: inputs in
//!   through `handle_*`, [`engine::Command`]s out.
//! - [`fs`]: the filesystem seam: scans, atomic writes, received files,
//!   deltas, the watcher, the state directory and the index file.
//! - [`transport`]: the `Net` trait and its async-std implementation,
//!   Noise with the cluster key, a connection's reader and writer tasks,
//!   discovery, limits, static peers.
//! - [`node`]: the driver: one event loop that feeds the engine and
//!   carries out its commands through `fs` and `transport`. Decides
//!   nothing about sync.
//! - [`app`]: the user's surface: flags, `dirsync status`, progress.
//! - `fuzz` (tests only): bounded fuzzing of every input a peer reaches.
//!
//! See docs/ARCHITECTURE.md for how they fit together and docs/PROTOCOL.md
//! for the wire format.

pub mod app;
pub(crate) mod engine;
pub mod fs;
pub mod node;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod fuzz;

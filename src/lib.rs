//! dirsync keeps one directory identical on every host of a LAN that runs it.
//!
//! # Layout
//!
//! - [`wire`]: every message and the frame codec (pure; caps every size).
//! - [`engine`]: the sync state machine (no IO, no clock): inputs in,
//!   [`engine::Command`]s out.
//! - [`index`]: path → version, the winner rule, the index file.
//! - [`delta`]: segmented fast_rsync signatures, diffs and patches.
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
//! - [`cli`]: flags → validated `node::Config`, and `dirsync keygen`.
//! - `fuzz` (tests only): bounded fuzzing of every input a peer reaches.
//!
//! See docs/ARCHITECTURE.md for how they fit together and docs/PROTOCOL.md
//! for the wire format.

pub mod cli;
pub mod conn;
pub mod delta;
pub mod discovery;
pub mod engine;
pub mod index;
pub mod key;
pub mod limits;
pub mod net;
pub mod node;
pub mod receive;
pub mod secure;
pub mod store;
pub mod watcher;
pub mod wire;

#[cfg(test)]
mod fuzz;

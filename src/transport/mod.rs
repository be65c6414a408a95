//! Everything between this node and the network.
//!
//! - [`net`]: the `Net` trait (sockets, tasks, clock) and its async-std
//!   implementation; `sim/` implements it over turmoil.
//! - [`secure`]: the layer under every connection: plain, or Noise records
//!   with the cluster key ([`key`]: key files and fingerprints).
//! - [`conn`]: one connection's handshake, reader task and writer task.
//! - [`send`]: what the writer streams: files, deltas, pieces, delta
//!   requests, paced.
//! - [`stream`]: writing one frame, the chunk size, a connection's
//!   traffic counters (shared by `conn` and `send`).
//! - [`jobs`]: a connection's outgoing work, control ahead of content.
//! - [`discovery`]: UDP broadcast announcements.
//! - [`limits`]: caps on peers, handshakes and queued work.
//! - [`rate`]: the bandwidth limits on file content.
//! - [`peering`]: the connection policy, sans IO: whom to dial, which of
//!   two connections to keep, the caps on peers and addresses heard, the
//!   backoff after a refusal.
//! - [`static_peers`]: `--peer` targets and their reconnection backoff.
//!
//! Depends on `wire` and `fs` (the writer streams files). Must not: decide
//! anything about sync.

pub mod conn;
pub(crate) mod discovery;
pub(crate) mod jobs;
pub mod key;
pub mod limits;
pub mod net;
pub(crate) mod peering;
pub(crate) mod rate;
pub mod secure;
mod send;
pub(crate) mod static_peers;
pub(crate) mod stream;

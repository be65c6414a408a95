//! Deterministic simulations of dirsync clusters.
//!
//! The same node code as production (`dirsync::node::run`) runs on turmoil
//! hosts over a simulated network: [`TurmoilNet`] implements
//! `dirsync::transport::net::Net` with turmoil's TCP and UDP, the host's paused tokio
//! runtime for tasks and sleeps, and simulated time for the clock. Each
//! host's synced directory is a real temp directory (turmoil simulates only
//! the network); the [`Cluster`] writes files there with simulated mtimes and
//! tells the node, as the watcher would.
//!
//! # Layout
//!
//! - [`net`]: `TurmoilNet`, the `Net` implementation.
//! - [`cluster`]: `Cluster`, N hosts plus faults, file changes, the
//!   convergence check and the replay digest.
//! - [`tree`]: reading a directory as a comparable tree.
//! - [`trace`]: capturing the nodes' log lines per simulation.
//!
//! The scenarios live in `tests/`. Each runs at a fixed seed and over a sweep
//! of seeds: a few under `cargo test` (`SWEEP_DEFAULT` here; some
//! scenarios set their own, fewer for the slow ones), `SIM_SEEDS=N` for
//! more (`just sim` runs 256), `SIM_SEED=S` for one.
//! `SIM_LOG=1` echoes the nodes' logs to stderr.

pub mod cluster;
pub mod net;
pub mod trace;
pub mod tree;
pub mod workload;

pub use cluster::{Cluster, Expect, Options, Rng};
pub use net::TurmoilNet;

/// How many swept seeds a scenario runs under `cargo test` besides its
/// fixed one: enough to catch a regression in a common path, few enough
/// that the suite stays within minutes on two cores. The long sweeps that
/// find rare interleavings are `just sim`'s.
pub const SWEEP_DEFAULT: usize = 8;

/// The seeds a scenario runs: `fixed` and then the sweep, or only
/// `SIM_SEED` when it is set.
pub fn seeds(fixed: u64, salt: u64) -> Vec<u64> {
    if std::env::var_os("SIM_SEED").is_some() {
        return sweep_seeds(salt, SWEEP_DEFAULT);
    }
    std::iter::once(fixed).chain(sweep_seeds(salt, SWEEP_DEFAULT)).collect()
}

/// The seeds a sweep runs: `SIM_SEED=S` alone, else `SIM_SEEDS` (default
/// `default`) seeds derived from `salt`, so each scenario sweeps its own.
pub fn sweep_seeds(salt: u64, default: usize) -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    (0..n as u64).map(|i| salt.wrapping_mul(1_000_003).wrapping_add(i)).collect()
}

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
//! of seeds: 32 by default, `SIM_SEEDS=N` for more, `SIM_SEED=S` for one.
//! `SIM_LOG=1` echoes the nodes' logs to stderr.

pub mod cluster;
pub mod net;
pub mod trace;
pub mod tree;
pub mod workload;

pub use cluster::{Cluster, Expect, Options, Rng};
pub use net::TurmoilNet;

/// The seeds a scenario runs: `fixed` and then the sweep, or only
/// `SIM_SEED` when it is set.
pub fn seeds(fixed: u64, salt: u64) -> Vec<u64> {
    if std::env::var_os("SIM_SEED").is_some() {
        return sweep_seeds(salt, 32);
    }
    std::iter::once(fixed).chain(sweep_seeds(salt, 32)).collect()
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

//! The random workload (`dirsync_sim::workload`): every user operation and
//! every fault, drawn from a seed, checked against invariants rather than
//! scripted outcomes. `cargo test` runs a few seeds per mix; `just sim N`
//! runs N. A failing seed prints its replay command (`SIM_SEED=S
//! SIM_MIX=name`).

use dirsync_sim::sweep_seeds;
use dirsync_sim::workload::{run, Mix, MIXES};

/// Seeds per mix under `cargo test`.
const SEEDS: usize = 6;

fn sweep(mix: &Mix, salt: u64) {
    if std::env::var("SIM_MIX").is_ok_and(|m| m != mix.name) {
        return;
    }
    // Every seed runs, and the failing ones are listed together: a long
    // sweep (`just sim`) reports the whole class, not its first case.
    let failed: Vec<u64> = sweep_seeds(salt, SEEDS)
        .into_iter()
        .filter(|&seed| std::panic::catch_unwind(|| run(seed, mix)).is_err())
        .collect();
    assert!(failed.is_empty(), "{} mix: seeds {failed:?} failed (see above)", mix.name);
}

#[test]
fn random_everyday_use() {
    sweep(&MIXES[0], 7_100);
}

#[test]
fn random_use_with_faults() {
    sweep(&MIXES[1], 7_200);
}

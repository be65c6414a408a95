//! Files changed while they are on their way (issue 24, case 0): git makes
//! its loose objects in bursts and touches every one of them again on each
//! `add` and `commit`, so a receiver is sent a version that is already
//! superseded when it arrives. Every file must still arrive, in its last
//! version, on every node count the simulations use. Before the fix the
//! answer to a want in another version was dropped and the request stayed
//! in flight for ever: the need was never asked again.

use dirsync_sim::{sweep_seeds, Cluster, Options, Rng};
use std::time::Duration;

const SWEEP: usize = 1;

fn seeds(salt: u64) -> Vec<u64> {
    sweep_seeds(salt, SWEEP)
}

/// `batches` bursts of new files on host 0; after each, every file made so
/// far is touched (a new mtime, the same bytes) and a few are rewritten,
/// all while the earlier bursts are still being sent.
fn touched_in_flight(seed: u64, nodes: usize, batches: usize, per_batch: usize) {
    let mut c = Cluster::new(Options::new(&format!("touched_in_flight_{nodes}"), nodes, seed));
    let mut rng = Rng::new(seed);
    c.start_all();
    c.converge(Duration::from_secs(30));
    let mut made = Vec::new();
    for b in 0..batches {
        for i in 0..per_batch {
            let path = format!("objects/{:02x}/{b}-{i}", rng.below(8));
            let len = 1 + rng.below(3000) as usize;
            let content = rng.bytes(len);
            c.write(0, &path, &content);
            made.push(path);
        }
        // Several rounds, closer together than a message takes: the
        // version a want is answered with is superseded on its way.
        for _ in 0..3 {
            c.run_for(Duration::from_millis(rng.below(15)));
            for path in &made {
                if rng.chance(3) {
                    let len = 1 + rng.below(3000) as usize;
                    let content = rng.bytes(len);
                    c.write(0, path, &content);
                } else {
                    let now = c.now_ns() as i128;
                    c.touch(0, path, now);
                }
            }
        }
    }
    // Within the quiet period and the retries, not a full rescan (the
    // simulation's is an hour away).
    c.converge(Duration::from_secs(90));
}

fn on(nodes: usize) {
    for seed in seeds(24_000 + nodes as u64) {
        touched_in_flight(seed, nodes, 12, 10);
    }
}

#[test]
fn touched_and_rewritten_in_flight_arrive_with_2_nodes() {
    on(2);
}

#[test]
fn touched_and_rewritten_in_flight_arrive_with_3_nodes() {
    on(3);
}

#[test]
fn touched_and_rewritten_in_flight_arrive_with_5_nodes() {
    on(5);
}

#[test]
fn touched_and_rewritten_in_flight_arrive_with_8_nodes() {
    on(8);
}

//! Static peers with discovery off: every node is given the same list of
//! every host (itself included), so both sides of every pair dial. The
//! cluster converges, keeps exactly one stable connection per pair, each
//! node recognises itself in the list, and a crashed node is dialled again
//! (with backoff) once it is back. A fixed seed and a small sweep
//! (`SIM_SEEDS=N` for more, `SIM_SEED=S` to replay one).

use dirsync_sim::{sweep_seeds, Cluster, Options, Rng};
use std::sync::atomic::Ordering;
use std::time::Duration;

const FIXED: u64 = 20_260_809;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn connections(c: &Cluster) -> Vec<u64> {
    (0..c.len()).map(|i| c.counters(i).connections.load(Ordering::Relaxed)).collect()
}

fn static_scenario(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(2) as usize;
    let mut opts = Options::new("static_peers", n, seed);
    opts.discovery = false;
    opts.static_peers = true;
    let mut c = Cluster::new(opts);
    for i in 0..n {
        for k in 0..1 + rng.below(4) {
            let len = rng.below(20_000) as usize;
            let data = rng.bytes(len);
            c.seed_file(i, &format!("n{i}/f{k}.bin"), &data);
        }
    }
    // Start at different times: early dials fail and back off.
    for i in 0..n {
        c.start(i);
        let wait = rng.below(4000);
        c.run_for(Duration::from_millis(wait));
    }
    c.converge(secs(120));

    // One connection per pair, and it stays: nothing is replaced while the
    // cluster is quiet.
    let before = connections(&c);
    c.assert_stays_converged(secs(40));
    assert_eq!(before, connections(&c), "connections were replaced while nothing happened");
    for i in 0..n {
        let counters = c.counters(i).values();
        assert_eq!(counters.static_self, 1, "host {i} should recognise itself in the list once");
        assert_eq!(counters.discovered, 0, "host {i}: discovery is off");
    }

    // A node crashes; changes happen meanwhile; it comes back with a new id
    // and is dialled again (it dials too).
    let h = rng.below(n as u64) as usize;
    let other = (h + 1) % n;
    c.crash(h);
    c.write(other, "while-down.txt", b"written while a node was down");
    let down = rng.below(45);
    c.run_for(secs(down));
    c.restart(h);
    c.converge(secs(120));
    assert_eq!(c.read(h, "while-down.txt"), Some(b"written while a node was down".to_vec()));
    c
}

#[test]
fn static_peers_without_discovery() {
    for seed in std::iter::once(FIXED).chain(sweep_seeds(9, 4)) {
        static_scenario(seed);
    }
}

#[test]
fn static_scenario_replays_identically() {
    let a = static_scenario(FIXED).digest();
    let b = static_scenario(FIXED).digest();
    assert_eq!(a, b, "two runs of one seed diverged");
}

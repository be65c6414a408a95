//! `.dirsyncignore` in a cluster: ignored paths stay each node's own (not
//! sent, not deleted, not overwritten by a peer's version), the ignore file
//! itself syncs, and a rule added later applies on every node once its
//! new version arrives. A fixed seed and a small sweep (`SIM_SEEDS=N` for
//! more, `SIM_SEED=S` to replay one).

use dirsync_sim::{sweep_seeds, Cluster, Options, Rng};
use std::time::Duration;

const FIXED: u64 = 20_260_808;
const RULES: &[u8] = b"# build output and logs stay local\n*.log\nbuild/\n";
const MORE_RULES: &[u8] = b"# build output and logs stay local\n*.log\nbuild/\n*.tmp\n";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What the scenario's rules ignore, for the tree comparison.
fn local_only(p: &str) -> bool {
    p.ends_with(".log") || p.ends_with(".tmp") || p == "build" || p.starts_with("build/")
}

fn own(host: usize, what: &str) -> Vec<u8> {
    format!("{what} of n{host}").into_bytes()
}

fn ignore_scenario(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3;
    let mut opts = Options::new("ignore", n, seed);
    opts.local_only = local_only;
    let mut c = Cluster::new(opts);
    for i in 0..n {
        // Every node starts with the rules, as a deployment would.
        c.seed_file_aged(i, ".dirsyncignore", RULES, secs(1000));
        // Same path on every node, different content and mtimes: no winner,
        // each keeps its own.
        c.seed_file_aged(i, "app.log", &own(i, "log"), secs(rng.below(100)));
        c.seed_file(i, &format!("build/out-n{i}.o"), &own(i, "object"));
        c.seed_file(i, "build/common.o", &own(i, "common object"));
        let len = rng.below(5000) as usize;
        let data = rng.bytes(len);
        c.seed_file(i, &format!("src/n{i}.txt"), &data);
    }
    for p in ["app.log", "build/common.o"] {
        c.forget(p);
    }
    for i in 0..n {
        c.forget(&format!("build/out-n{i}.o"));
    }
    c.start_all();
    c.converge(secs(60));
    for i in 0..n {
        assert_eq!(c.read(i, "app.log"), Some(own(i, "log")), "n{i}'s app.log was overwritten");
        assert_eq!(c.read(i, "build/common.o"), Some(own(i, "common object")));
        for j in (0..n).filter(|&j| j != i) {
            assert!(!c.exists(i, &format!("build/out-n{j}.o")), "n{j}'s build output reached n{i}");
            assert!(c.exists(i, &format!("src/n{j}.txt")), "a synced file is missing");
        }
    }

    // Live changes to ignored paths travel nowhere: an edit, a deletion.
    let h = rng.below(n as u64) as usize;
    let other = (h + 1 + rng.below(n as u64 - 1) as usize) % n;
    c.write(h, "app.log", b"edited locally");
    c.forget("app.log");
    c.delete(other, "build/common.o");
    c.forget("build/common.o");
    c.write(h, "src/edited.txt", b"this one travels");
    c.converge(secs(60));
    assert_eq!(c.read(h, "app.log"), Some(b"edited locally".to_vec()));
    assert!(!c.exists(other, "build/common.o"));
    for i in (0..n).filter(|&i| i != h) {
        assert_eq!(c.read(i, "app.log"), Some(own(i, "log")), "an ignored edit travelled to n{i}");
    }
    for i in (0..n).filter(|&i| i != other) {
        assert_eq!(
            c.read(i, "build/common.o"),
            Some(own(i, "common object")),
            "an ignored deletion travelled to n{i}"
        );
    }

    // A new rule, written on one node, syncs and applies everywhere.
    let r = rng.below(n as u64) as usize;
    c.write(r, ".dirsyncignore", MORE_RULES);
    c.converge(secs(60));
    for i in 0..n {
        assert_eq!(c.read(i, ".dirsyncignore"), Some(MORE_RULES.to_vec()));
        c.write(i, "scratch.tmp", &own(i, "scratch"));
    }
    c.forget("scratch.tmp");
    c.converge(secs(60));
    for i in 0..n {
        assert_eq!(
            c.read(i, "scratch.tmp"),
            Some(own(i, "scratch")),
            "n{i}'s scratch.tmp was overwritten"
        );
    }
    c
}

#[test]
fn ignored_paths_stay_local() {
    for seed in std::iter::once(FIXED).chain(sweep_seeds(8, 4)) {
        ignore_scenario(seed);
    }
}

#[test]
fn ignore_scenario_replays_identically() {
    let a = ignore_scenario(FIXED).digest();
    let b = ignore_scenario(FIXED).digest();
    assert_eq!(a, b, "two runs of one seed diverged");
}

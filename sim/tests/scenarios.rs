//! Cluster scenarios, each at a fixed seed and over a sweep of seeds
//! (32 by default; `SIM_SEEDS=N` for more, `SIM_SEED=S` to replay one).
//! A failure names its scenario and seed and leaves the full trace in
//! `$TMPDIR/dirsync-sim-failures/`.

use dirsync_sim::{seeds, Cluster, Expect, Options, Rng};
use std::collections::BTreeSet;
use std::time::Duration;

const FIXED: u64 = 20_260_101;
/// How long a converged cluster is watched for changes at the end of a
/// scenario: more than the idle timeout (20 s).
const QUIET: Duration = Duration::from_secs(25);

/// One change a scenario makes, decided now and applied later.
type Step = Box<dyn FnOnce(&mut Cluster, &mut Rng)>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn hash(content: &[u8]) -> [u8; 32] {
    *blake3::hash(content).as_bytes()
}

/// Small text-like content, sometimes above the delta threshold (64 KiB).
fn content(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.chance(10) {
        64 * 1024 + rng.below(200 * 1024) as usize
    } else {
        rng.below(6000) as usize
    };
    rng.bytes(len)
}

/// `old` with a few bytes changed: a modification a delta can carry.
fn edit(rng: &mut Rng, old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    if new.is_empty() || rng.chance(30) {
        let len = 1 + rng.below(300) as usize;
        new.extend_from_slice(&rng.bytes(len));
        return new;
    }
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(new.len() as u64) as usize;
        let end = (at + 1 + rng.below(100) as usize).min(new.len());
        let patch = rng.bytes(end - at);
        new[at..end].copy_from_slice(&patch);
    }
    new
}

// ----- 1. discovery and merge --------------------------------------------

/// 3–5 nodes with different trees start at different times, find each other
/// by broadcast and end with the union; a path on several nodes ends with
/// the newest version, equal mtimes break by content hash.
fn discovery_merge(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(3) as usize;
    let mut c = Cluster::new(Options::new("discovery_merge", n, seed));
    for i in 0..n {
        for k in 0..2 + rng.below(4) {
            let age = secs(rng.below(10_000));
            let data = content(&mut rng);
            c.seed_file_aged(i, &format!("n{i}/f{k}.txt"), &data, age);
        }
        let len = rng.below(3000) as usize;
        let data = rng.bytes(len);
        c.seed_file(i, &format!("shared/deep/from-n{i}.bin"), &data);
        c.seed_dir(i, &format!("empty{i}/inner"));
    }
    // The same path with different content and mtimes: the newest wins.
    let mut ages: Vec<u64> = (0..n as u64).map(|i| 100 + i * 7).collect();
    for i in (1..ages.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ages.swap(i, j);
    }
    let mut newest = (u64::MAX, [0u8; 32]);
    for (i, age) in ages.iter().enumerate() {
        let data = format!("conflict version of n{i}").into_bytes();
        c.seed_file_aged(i, "conflict.txt", &data, secs(*age));
        if *age < newest.0 {
            newest = (*age, hash(&data));
        }
    }
    c.expect("conflict.txt", Expect::File(newest.1));
    // The same mtime, different content: the larger content hash wins.
    let (a, b) = (0, 1 + rng.below(n as u64 - 1) as usize);
    let (da, db) = (rng.bytes(40), rng.bytes(40));
    c.seed_file_aged(a, "tie.txt", &da, secs(50));
    c.seed_file_aged(b, "tie.txt", &db, secs(50));
    c.expect("tie.txt", Expect::File(hash(&da).max(hash(&db))));
    // The same content everywhere with different mtimes: one version.
    for i in 0..n {
        c.seed_file_aged(i, "same.txt", b"identical everywhere", secs(10 + i as u64));
    }
    // Staggered starts, in a seed-chosen order.
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for i in order {
        c.start(i);
        c.run_for(ms(rng.below(2500)));
    }
    c.converge(secs(40));
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn discovery_and_merge() {
    for seed in seeds(FIXED, 1) {
        discovery_merge(seed);
    }
}

// ----- 2. live bursts ----------------------------------------------------

/// One burst: several changes on several nodes at the same instant, on
/// unrelated paths (so the model knows the outcome: the last change to a
/// path wins).
fn burst(c: &mut Cluster, rng: &mut Rng, tag: &str, hosts: &[usize]) {
    let ops = 1 + rng.below(2 * hosts.len() as u64);
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let related = |touched: &BTreeSet<String>, p: &str| {
        touched
            .iter()
            .any(|t| t == p || p.starts_with(&format!("{t}/")) || t.starts_with(&format!("{p}/")))
    };
    for k in 0..ops {
        let host = *rng.pick(hosts);
        let tree = c.tree(host);
        let files: Vec<String> = tree.iter().filter(|(_, i)| i.hash().is_some()).map(|(p, _)| p.clone()).collect();
        let dirs: Vec<String> = tree.iter().filter(|(_, i)| i.hash().is_none()).map(|(p, _)| p.clone()).collect();
        let fresh_dir = || -> String { format!("d{}", rng_dir(tag, k)) };
        let roll = rng.below(100);
        let (path, op): (String, Step) = if roll < 30 || files.is_empty() {
            // create, in an existing folder, a new one, or the root
            let dir = match rng.below(3) {
                0 if !dirs.is_empty() => format!("{}/", rng.pick(&dirs)),
                1 => format!("{}/", fresh_dir()),
                _ => String::new(),
            };
            let p = format!("{dir}f-{tag}-{k}.txt");
            let q = p.clone();
            (p, Box::new(move |c, rng| c.write(host, &q, &content(rng))))
        } else if roll < 60 {
            let p = rng.pick(&files).clone();
            let old = c.read(host, &p).unwrap_or_default();
            let q = p.clone();
            (p, Box::new(move |c, rng| c.write(host, &q, &edit(rng, &old))))
        } else if roll < 72 {
            let p = rng.pick(&files).clone();
            let q = p.clone();
            (p, Box::new(move |c, _| c.delete(host, &q)))
        } else if roll < 86 {
            let p = rng.pick(&files).clone();
            let to = match p.rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/f-{tag}-{k}-moved.txt"),
                None => format!("f-{tag}-{k}-moved.txt"),
            };
            if related(&touched, &to) {
                continue;
            }
            touched.insert(to.clone());
            let q = p.clone();
            (p, Box::new(move |c, _| c.rename(host, &q, &to)))
        } else if roll < 93 && !dirs.is_empty() {
            let p = rng.pick(&dirs).clone();
            let to = fresh_dir();
            if related(&touched, &to) {
                continue;
            }
            touched.insert(to.clone());
            let q = p.clone();
            (p, Box::new(move |c, _| c.rename(host, &q, &to)))
        } else if !dirs.is_empty() {
            let p = rng.pick(&dirs).clone();
            let q = p.clone();
            (p, Box::new(move |c, _| c.delete(host, &q)))
        } else {
            let p = fresh_dir();
            let q = p.clone();
            (p, Box::new(move |c, _| c.mkdir(host, &q)))
        };
        if related(&touched, &path) {
            continue;
        }
        touched.insert(path);
        op(c, rng);
    }
}

/// A folder name unique to a burst and op.
fn rng_dir(tag: &str, k: u64) -> String {
    format!("{tag}x{k}")
}

/// Rounds of bursts on several nodes at once, with pauses of random length
/// (some shorter than a transfer), then convergence.
fn live_bursts(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(2) as usize;
    let mut c = Cluster::new(Options::new("live_bursts", n, seed));
    for d in 0..3 {
        for f in 0..3 {
            let data = content(&mut rng);
            c.seed_file(0, &format!("d{d}/f{f}.txt"), &data);
        }
    }
    c.seed_file(0, "top.txt", b"top");
    c.start_all();
    c.converge(secs(30));
    let hosts: Vec<usize> = (0..n).collect();
    for round in 0..6 + rng.below(5) {
        for b in 0..1 + rng.below(4) {
            burst(&mut c, &mut rng, &format!("r{round}b{b}"), &hosts);
            c.run_for(ms(3 + rng.below(60)));
        }
        c.run_for(ms(rng.below(2000)));
    }
    c.converge(secs(60));
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn live_changes_in_bursts() {
    for seed in seeds(FIXED, 2) {
        live_bursts(seed);
    }
}

// ----- 3. partition and conflicts ----------------------------------------

/// One node is cut off; both sides change things, some of them the same
/// files (edit against edit, delete against edit, rename against edit,
/// equal mtimes); after the repair every node holds the same winners.
fn partition_conflicts(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(3) as usize;
    let mut c = Cluster::new(Options::new("partition_conflicts", n, seed));
    let names = ["both.txt", "del-vs-edit.txt", "edit-vs-del.txt", "tie.txt", "rn.txt", "keep.txt"];
    for p in names {
        let data = content(&mut rng);
        c.seed_file(0, p, &data);
    }
    c.seed_file(0, "docs/a.txt", b"a");
    c.seed_file(0, "docs/b.txt", b"b");
    c.seed_file(0, "big.bin", &rng.bytes(300 * 1024));
    c.start_all();
    c.converge(secs(30));

    let x = rng.below(n as u64) as usize;
    let y = (x + 1 + rng.below(n as u64 - 1) as usize) % n;
    c.isolate(x);
    c.run_for(ms(rng.below(3000)));
    // Each change at its own instant, in a seed-chosen order; a pair on
    // the same path is at least 50 ms apart so the later one wins.
    let side = |rng: &mut Rng| if rng.chance(50) { (x, y) } else { (y, x) };
    let mut steps: Vec<Step> = Vec::new();
    let (a, b) = side(&mut rng);
    steps.push(Box::new(move |c, rng| {
        let old = c.read(a, "both.txt").unwrap();
        c.write(a, "both.txt", &edit(rng, &old));
        c.run_for(ms(50 + rng.below(500)));
        let old = c.read(b, "both.txt").unwrap();
        c.write(b, "both.txt", &edit(rng, &old));
    }));
    let (a, b) = side(&mut rng);
    steps.push(Box::new(move |c, rng| {
        c.delete(a, "del-vs-edit.txt");
        c.run_for(ms(50 + rng.below(500)));
        c.write(b, "del-vs-edit.txt", b"edited after the delete");
    }));
    let (a, b) = side(&mut rng);
    steps.push(Box::new(move |c, rng| {
        c.write(a, "edit-vs-del.txt", b"edited before the delete");
        c.run_for(ms(50 + rng.below(500)));
        c.delete(b, "edit-vs-del.txt");
        // The delete did not see the edit: the edit wins, the file stays.
        c.expect("edit-vs-del.txt", Expect::File(hash(b"edited before the delete")));
    }));
    steps.push(Box::new(move |c, rng| {
        // Both sides in the same instant: equal mtimes.
        let (dx, dy) = (rng.bytes(64), rng.bytes(64));
        c.write(x, "tie.txt", &dx);
        c.write(y, "tie.txt", &dy);
        c.expect("tie.txt", Expect::File(hash(&dx).max(hash(&dy))));
    }));
    let (a, b) = side(&mut rng);
    let rename_first = rng.chance(50);
    steps.push(Box::new(move |c, rng| {
        if rename_first {
            c.rename(a, "rn.txt", "rn-moved.txt");
            c.run_for(ms(50 + rng.below(500)));
            c.write(b, "rn.txt", b"edited after the rename");
        } else {
            c.write(b, "rn.txt", b"edited before the rename");
            c.run_for(ms(50 + rng.below(500)));
            c.rename(a, "rn.txt", "rn-moved.txt");
            // The rename's delete of rn.txt did not see the edit: both stay.
            c.expect("rn.txt", Expect::File(hash(b"edited before the rename")));
        }
    }));
    let (a, b) = side(&mut rng);
    steps.push(Box::new(move |c, rng| {
        c.delete(a, "docs");
        c.run_for(ms(50 + rng.below(500)));
        c.write(b, "docs/c.txt", b"new in docs");
    }));
    steps.push(Box::new(move |c, rng| {
        c.write(x, "only-x.txt", &content(rng));
        c.write(y, "only-y.txt", &content(rng));
        let old = c.read(y, "big.bin").unwrap();
        c.write(y, "big.bin", &edit(rng, &old));
    }));
    for i in (1..steps.len()).rev() {
        steps.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for s in steps {
        s(&mut c, &mut rng);
        c.run_for(ms(rng.below(400)));
    }
    // Some partitions outlast the idle timeout (the connections die while
    // cut off), some do not (they die after the repair).
    c.run_for(ms(rng.below(40_000)));
    c.heal(x);
    c.converge(secs(90));
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn partition_then_repair() {
    for seed in seeds(FIXED, 3) {
        partition_conflicts(seed);
    }
}

// ----- 4. crash and restart in the middle of a transfer -------------------

/// A node crashes while a file is being received (or sent), with a temp
/// file left as a real crash would leave it; the others change things
/// meanwhile; it restarts with a new id and its state on disk, converges,
/// and no temp file stays visible.
fn crash_restart(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3;
    let mut opts = Options::new("crash_restart", n, seed);
    opts.min_latency = ms(2);
    opts.max_latency = ms(60);
    let mut c = Cluster::new(opts);
    for i in 0..n {
        let data = content(&mut rng);
        c.seed_file(i, &format!("n{i}.txt"), &data);
        c.seed_file(i, "common/doomed.txt", b"deleted while a node is down");
    }
    c.start_all();
    c.converge(secs(30));

    let sender = rng.below(n as u64) as usize;
    let receiver = (sender + 1 + rng.below(n as u64 - 1) as usize) % n;
    // The receiver crashes, or the sender does.
    let victim = if rng.chance(60) { receiver } else { sender };
    let size = (4 + rng.below(5)) as usize * 1024 * 1024;
    let big = rng.bytes(size);
    c.write(sender, "media/big.bin", &big);
    // Usually the file is caught half received; when all of it arrives in
    // one step, the crash follows its arrival instead.
    let caught = c.run_until(secs(10), |c| !c.temp_files(receiver).is_empty());
    if seed == FIXED {
        assert!(caught, "the fixed seed crashes a node in the middle of a transfer");
    }
    c.run_for(ms(rng.below(20)));
    let temps = c.temp_files(receiver).len();
    c.note(format!(
        "crashing {} while {} receives ({temps} temp files there)",
        c.name(victim),
        c.name(receiver)
    ));
    let old_id = c.node_id(victim);
    c.crash(victim);
    c.plant_temp_file(victim, "media", &big[..size / 3]);
    // Life goes on without it.
    c.run_for(ms(500 + rng.below(3000)));
    let other = (victim + 1) % n;
    c.write(other, "while-down.txt", b"written while a node was down");
    c.delete(other, "common/doomed.txt");
    c.run_for(ms(rng.below(5000)));
    c.restart(victim);
    c.converge(secs(60));
    assert_ne!(c.node_id(victim), old_id, "a restarted node runs under a new id");
    assert!(c.temp_files(victim).is_empty());
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn crash_and_restart_mid_transfer() {
    for seed in seeds(FIXED, 4) {
        crash_restart(seed);
    }
}

// ----- 5. latency, loss, held links --------------------------------------

/// Long and uneven latency, messages lost (each loss breaks a TCP
/// connection in turmoil, which the keep-alive must notice), and a link
/// held for a while then released, all during live changes.
fn faults(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(2) as usize;
    let mut opts = Options::new("faults", n, seed);
    opts.min_latency = ms(1 + rng.below(20));
    opts.max_latency = ms(100 + rng.below(400));
    let mut c = Cluster::new(opts);
    for i in 0..n {
        for k in 0..3 {
            let data = content(&mut rng);
            c.seed_file(i, &format!("n{i}/f{k}.txt"), &data);
        }
    }
    c.start_all();
    let loss = [0.0005, 0.001, 0.003][rng.below(3) as usize];
    c.set_fail_rate(loss);
    let a = rng.below(n as u64) as usize;
    let b = (a + 1 + rng.below(n as u64 - 1) as usize) % n;
    let hosts: Vec<usize> = (0..n).collect();
    c.run_for(ms(rng.below(3000)));
    c.hold(a, b);
    let hold_for = ms(1000 + rng.below(30_000));
    let until = c.elapsed() + hold_for;
    let mut round = 0;
    while c.elapsed() < until {
        burst(&mut c, &mut rng, &format!("h{round}"), &hosts);
        c.run_for(ms(3 + rng.below(1500)));
        round += 1;
    }
    c.release(a, b);
    for r in 0..3 {
        burst(&mut c, &mut rng, &format!("l{r}"), &hosts);
        c.run_for(ms(rng.below(2000)));
    }
    c.converge(secs(150));
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn latency_loss_and_held_links() {
    for seed in seeds(FIXED, 5) {
        faults(seed);
    }
}

// ----- 6. a big file edited a little travels as a delta ------------------

fn big_file_delta(seed: u64, size: usize) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3;
    let mut c = Cluster::new(Options::new("big_file_delta", n, seed));
    let original = rng.bytes(size);
    c.seed_file(0, "big.bin", &original);
    c.start_all();
    c.converge(secs(60));
    let editor = 1 + rng.below(2) as usize;
    let before: Vec<u64> = (0..n).map(|i| c.content_bytes_received(i)).collect();
    let deltas_before: Vec<u64> = (0..n).map(|i| c.counters(i).values().deltas_received).collect();
    let mut edited = original.clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(size as u64 - 200) as usize;
        edited[at..at + 100].copy_from_slice(&rng.bytes(100));
    }
    c.write(editor, "big.bin", &edited);
    c.converge(secs(60));
    for i in (0..n).filter(|&i| i != editor) {
        let got = c.content_bytes_received(i) - before[i];
        assert!(
            got > 0 && got < size as u64 / 50,
            "seed {seed}: node {i} received {got} content bytes for a {size}-byte file edited in a few places: not a delta"
        );
    }
    for (i, was) in deltas_before.iter().enumerate() {
        let deltas = c.counters(i).values().deltas_received - was;
        let want = u64::from(i != editor);
        assert_eq!(
            deltas, want,
            "seed {seed}: node {i} received {deltas} deltas; every other node applies the edit as one"
        );
    }
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn big_file_edit_travels_as_delta() {
    let mut first = true;
    for seed in seeds(FIXED, 6) {
        // 20 MiB at the fixed seed; smaller files in the sweep keep it quick.
        let size = if first { 20 << 20 } else { (1 + (seed % 4) as usize) << 20 };
        first = false;
        big_file_delta(seed, size);
    }
}

// ----- replay ------------------------------------------------------------

/// One seed run twice gives the same trace, trees, mtimes and convergence
/// times; another seed gives another.
#[test]
fn a_seed_replays_exactly() {
    type Scenario = fn(u64) -> Cluster;
    let scenarios: [(&str, Scenario); 4] = [
        ("live_bursts", live_bursts),
        ("partition_conflicts", partition_conflicts),
        ("crash_restart", crash_restart),
        ("faults", faults),
    ];
    for (name, run) in scenarios {
        let (mut a, mut b) = (run(FIXED), run(FIXED));
        let (first, again) = (a.digest(), b.digest());
        if first != again {
            let dir = std::env::temp_dir().join("dirsync-sim-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let (fa, fb) = (dir.join(format!("{name}-replay-1.log")), dir.join(format!("{name}-replay-2.log")));
            std::fs::write(&fa, a.sanitized_log().join("\n")).unwrap();
            std::fs::write(&fb, b.sanitized_log().join("\n")).unwrap();
            panic!("{name}: seed {FIXED} did not replay: diff {} {}", fa.display(), fb.display());
        }
        let other = run(FIXED + 1).digest();
        assert_ne!(first, other, "{name}: two seeds gave the same trace");
    }
}

//! Data-safety scenarios: deletes that must stay deleted, edits that must
//! never be lost (conflict copies, edit against delete), and partitions
//! with changes on both sides. Each runs at a fixed seed and over a small
//! sweep (`SIM_SEEDS=N` for more, `SIM_SEED=S` to replay one).

use dirsync_sim::{sweep_seeds, Cluster, Expect, Options, Rng};
use std::collections::BTreeSet;
use std::time::Duration;

const FIXED: u64 = 20_261_125;
/// Seeds per sweep by default: keeps this file's run short.
const SWEEP: usize = 3;
const QUIET: Duration = Duration::from_secs(25);

fn seeds(salt: u64) -> Vec<u64> {
    let mut s = vec![FIXED];
    if std::env::var_os("SIM_SEED").is_some() {
        s.clear();
    }
    s.extend(sweep_seeds(salt, SWEEP));
    s
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn hash(content: &[u8]) -> [u8; 32] {
    *blake3::hash(content).as_bytes()
}

/// The conflict copies of `path` (`dir/name.ext`) on `host`, with their hashes.
fn conflict_copies(c: &mut Cluster, host: usize, path: &str) -> Vec<(String, [u8; 32])> {
    let (stem, ext) = match path.rsplit_once('.') {
        Some((s, e)) => (s.to_string(), format!(".{e}")),
        None => (path.to_string(), String::new()),
    };
    let prefix = format!("{stem}.sync-conflict-");
    c.tree(host)
        .into_iter()
        .filter(|(p, _)| p.starts_with(&prefix) && p.ends_with(&ext))
        .filter_map(|(p, i)| i.hash().map(|h| (p, h)))
        .collect()
}

/// Every content hash in `host`'s tree.
fn contents(c: &mut Cluster, host: usize) -> BTreeSet<[u8; 32]> {
    c.tree(host).values().filter_map(|i| i.hash()).collect()
}

// ----- 1. an offline delete does not come back ----------------------------

/// A node is down (crashed) while others delete files and a folder, and
/// while a file is deleted on its own disk; it restarts with its old index
/// and must not bring anything back. A file deleted and then re-created
/// (after the delete) comes back.
fn offline_delete(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3;
    let mut c = Cluster::new(Options::new("offline_delete", n, seed));
    for k in 0..4 {
        let len = rng.below(3000) as usize;
        c.seed_file(0, &format!("f{k}.txt"), &rng.bytes(len));
    }
    c.seed_file(0, "folder/a.txt", b"a");
    c.seed_file(0, "folder/sub/b.txt", b"b");
    c.seed_file(0, "again.txt", b"first life");
    c.start_all();
    c.converge(secs(30));
    let away = rng.below(n as u64) as usize;
    let other = (away + 1 + rng.below(n as u64 - 1) as usize) % n;
    // Let the index be saved (every 2 s) before the crash.
    c.run_for(secs(3));
    c.crash(away);
    c.run_for(ms(rng.below(2000)));
    c.delete(other, "f0.txt");
    c.delete(other, "folder");
    c.delete(other, "again.txt");
    c.run_for(ms(100 + rng.below(1000)));
    c.write(other, "again.txt", b"second life, after the delete");
    // Deleted on the down node's own disk while it was not running.
    c.delete(away, "f1.txt");
    c.run_for(ms(rng.below(3000)));
    c.restart(away);
    c.converge(secs(60));
    for p in ["f0.txt", "f1.txt", "folder", "folder/a.txt", "folder/sub/b.txt"] {
        assert!(!c.exists(away, p), "seed {seed}: {p} came back");
    }
    assert_eq!(c.read(away, "again.txt").as_deref(), Some(&b"second life, after the delete"[..]));
    assert!(conflict_copies(&mut c, 0, "again.txt").is_empty());
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn an_offline_delete_does_not_resurrect() {
    for seed in seeds(11) {
        offline_delete(seed);
    }
}

/// Issue 24, case 1: a node killed right after it received files (before
/// its index reached the disk) must not take them for new files of its own
/// when it restarts: deletions and edits made meanwhile win, and no
/// conflict copy appears, for no two writes raced.
fn crash_soon_after_receiving(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3;
    let mut c = Cluster::new(Options::new("crash_soon_after_receiving", n, seed));
    c.start_all();
    c.converge(secs(30));
    let (maker, away, other) = (0, 2, 1);
    for k in 1..=10 {
        let len = 1 + rng.below(2000) as usize;
        c.write(maker, &format!("k{k}"), &rng.bytes(len));
    }
    let received = c.run_until(secs(10), |c| (1..=10).all(|k| c.exists(away, &format!("k{k}"))));
    assert!(received, "seed {seed}: the files never reached {}", c.name(away));
    c.run_for(ms(rng.below(300)));
    c.crash(away);
    c.write(maker, "k1", b"edited while the receiver was down");
    c.delete(maker, "k2");
    c.delete(other, "k3");
    c.run_for(ms(500 + rng.below(2000)));
    c.restart(away);
    c.converge(secs(60));
    for p in ["k2", "k3"] {
        assert!(!c.exists(0, p), "seed {seed}: {p} came back");
    }
    assert_eq!(c.read(away, "k1").as_deref(), Some(&b"edited while the receiver was down"[..]));
    for k in 1..=10 {
        let copies = conflict_copies(&mut c, 0, &format!("k{k}"));
        assert!(copies.is_empty(), "seed {seed}: conflict copies where no writes raced: {copies:?}");
    }
    c.assert_stays_converged(QUIET);
    c
}

#[test]
fn a_crash_soon_after_receiving_undoes_no_delete() {
    for seed in seeds(12) {
        crash_soon_after_receiving(seed);
    }
}

/// Issue 24, case 7: two nodes write one file at nearly the same instant,
/// five rounds 0.4 s apart. Every write survives somewhere (at the path or
/// as a conflict copy, on every node) unless a later write made over it
/// replaced it: what was on a disk when a conflict was decided is kept.
fn racing_rounds(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut c = Cluster::new(Options::new("racing_rounds", 2, seed));
    c.seed_file(0, "f.txt", b"start");
    c.start_all();
    c.converge(secs(30));
    let mut survivors: BTreeSet<[u8; 32]> = BTreeSet::new();
    for round in 1..=5 {
        let first = rng.below(2) as usize;
        for (i, host) in [first, 1 - first].into_iter().enumerate() {
            if i == 1 {
                c.run_for(ms(rng.below(15)));
            }
            if let Some(replaced) = c.read(host, "f.txt") {
                survivors.remove(&hash(&replaced));
            }
            let data = format!("{} round {round} {}", c.name(host), rng.below(1_000_000)).into_bytes();
            c.write(host, "f.txt", &data);
            survivors.insert(hash(&data));
        }
        c.run_for(ms(400));
    }
    // Which write wins the path is the tie-break's: only survival is checked.
    c.forget_all();
    c.converge(secs(60));
    let held = contents(&mut c, 0);
    let lost = survivors.iter().filter(|h| !held.contains(*h)).count();
    if lost > 0 {
        c.fail(&format!("{lost} write(s) that nothing replaced are on no node"));
    }
    c
}

#[test]
fn racing_writes_keep_each_sides_last_write() {
    for seed in seeds(13) {
        racing_rounds(seed);
    }
}

// ----- 2. concurrent edits: exactly one conflict copy everywhere -----------

/// Two sides of a partition edit the same file; after the repair the newer
/// edit is at the path and the older one is kept as exactly one conflict
/// copy, the same on every node. A sequential edit (made after seeing the
/// other) makes none.
fn concurrent_edits(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(2) as usize;
    let mut c = Cluster::new(Options::new("concurrent_edits", n, seed));
    c.seed_file(0, "docs/report.txt", b"the original report");
    c.seed_file(0, "seq.txt", b"sequential");
    c.start_all();
    c.converge(secs(30));
    // Sequential: one node edits, everyone sees it, another edits again.
    let (s1, s2) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
    c.write(s1, "seq.txt", b"sequential, first edit");
    c.converge(secs(30));
    c.write(s2, "seq.txt", b"sequential, second edit");
    c.converge(secs(30));
    // Concurrent: x (cut off) and y edit the same file.
    let x = rng.below(n as u64) as usize;
    let y = (x + 1 + rng.below(n as u64 - 1) as usize) % n;
    c.isolate(x);
    c.run_for(ms(rng.below(2000)));
    let (first, second) = if rng.chance(50) { (x, y) } else { (y, x) };
    let older = format!("older edit on {}", c.name(first)).into_bytes();
    let newer = format!("newer edit on {}", c.name(second)).into_bytes();
    c.write(first, "docs/report.txt", &older);
    c.run_for(ms(50 + rng.below(2000)));
    c.write(second, "docs/report.txt", &newer);
    c.run_for(ms(rng.below(30_000)));
    c.heal(x);
    c.converge(secs(90));
    c.assert_stays_converged(QUIET);
    assert_eq!(c.read(0, "docs/report.txt"), Some(newer.clone()), "seed {seed}");
    for host in 0..n {
        let copies = conflict_copies(&mut c, host, "docs/report.txt");
        assert_eq!(copies.len(), 1, "seed {seed}: {} holds {copies:?}", c.name(host));
        assert_eq!(copies[0].1, hash(&older), "seed {seed}: the conflict copy holds the older edit");
        assert!(copies[0].0.starts_with("docs/report.sync-conflict-"), "{}", copies[0].0);
    }
    assert!(
        conflict_copies(&mut c, 0, "seq.txt").is_empty(),
        "seed {seed}: a sequential edit made a conflict copy"
    );
    c
}

#[test]
fn concurrent_edits_give_exactly_one_conflict_copy_on_every_node() {
    for seed in seeds(12) {
        concurrent_edits(seed);
    }
}

// ----- 3. edit against delete -----------------------------------------------

/// An edit and a delete that did not see it: the edit wins, in either
/// order, and no conflict copy is made. A delete made after seeing the
/// edit wins.
fn edit_vs_delete(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3;
    let mut c = Cluster::new(Options::new("edit_vs_delete", n, seed));
    // keep.txt: a directory is never emptied (that trips the mass-delete
    // guard, see tests/guard.rs).
    for p in ["edit-first.txt", "delete-first.txt", "seen.txt", "keep.txt"] {
        c.seed_file(0, p, format!("original {p}").as_bytes());
    }
    c.start_all();
    c.converge(secs(30));
    // Sequential: the delete saw the edit.
    let (a, b) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
    c.write(a, "seen.txt", b"edited, then seen by the deleter");
    c.converge(secs(30));
    c.delete(b, "seen.txt");
    c.converge(secs(30));
    assert!(!c.exists(a, "seen.txt"), "seed {seed}: a delete that saw the edit lost");
    // Concurrent, across a partition, in both orders.
    let x = rng.below(n as u64) as usize;
    let y = (x + 1) % n;
    c.isolate(x);
    let (editor, deleter) = if rng.chance(50) { (x, y) } else { (y, x) };
    c.write(editor, "edit-first.txt", b"edited before the delete");
    c.run_for(ms(50 + rng.below(1000)));
    c.delete(deleter, "edit-first.txt");
    c.delete(deleter, "delete-first.txt");
    c.run_for(ms(50 + rng.below(1000)));
    c.write(editor, "delete-first.txt", b"edited after the delete");
    c.expect("edit-first.txt", Expect::File(hash(b"edited before the delete")));
    c.run_for(ms(rng.below(30_000)));
    c.heal(x);
    c.converge(secs(90));
    c.assert_stays_converged(QUIET);
    for p in ["edit-first.txt", "delete-first.txt"] {
        for host in 0..n {
            assert!(c.exists(host, p), "seed {seed}: {p} missing on {}", c.name(host));
        }
        assert!(conflict_copies(&mut c, 0, p).is_empty(), "seed {seed}: {p} got a conflict copy");
    }
    c
}

#[test]
fn an_edit_beats_a_concurrent_delete() {
    for seed in seeds(13) {
        edit_vs_delete(seed);
    }
}

// ----- 4. a partition with changes on both sides ----------------------------

/// What one side does to one file during the partition.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Keep,
    Edit,
    Delete,
}

/// Two groups of nodes are cut apart; on each side nodes create, edit and
/// delete files, some of them the same files as the other side. After the
/// repair every node holds the same tree, every edit made on either side
/// is somewhere in it (at its path, or as a conflict copy), and what
/// neither side kept is gone.
fn partition_both_sides(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 4;
    let mut c = Cluster::new(Options::new("partition_both_sides", n, seed));
    let files: Vec<String> = (0..9).map(|k| format!("shared/f{k}.txt")).collect();
    for f in &files {
        let len = 10 + rng.below(2000) as usize;
        c.seed_file(0, f, &rng.bytes(len));
    }
    c.start_all();
    c.converge(secs(30));
    // Side A = {0, 1}, side B = {2, 3}: cut every link between them.
    c.split(&[0, 1]);
    c.run_for(ms(rng.below(2000)));
    let mut edits: Vec<Vec<u8>> = Vec::new();
    let mut plan = Vec::new();
    for (k, f) in files.iter().enumerate() {
        // Every combination of two ops appears for some file.
        let ops = [Op::Keep, Op::Edit, Op::Delete];
        let (oa, ob) = (ops[k % 3], ops[k / 3]);
        plan.push((f.clone(), oa, ob));
    }
    // The two sides act interleaved, at seed-chosen moments.
    let mut steps: Vec<(usize, String, Op)> = Vec::new();
    for (f, oa, ob) in &plan {
        steps.push((rng.below(2) as usize, f.clone(), *oa));
        steps.push((2 + rng.below(2) as usize, f.clone(), *ob));
    }
    for i in (1..steps.len()).rev() {
        steps.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (host, f, op) in steps {
        match op {
            Op::Keep => {}
            Op::Edit => {
                let data = format!("{f} edited on {} ({})", c.name(host), rng.next_u64()).into_bytes();
                edits.push(data.clone());
                c.write(host, &f, &data);
            }
            Op::Delete => c.delete(host, &f),
        }
        c.run_for(ms(10 + rng.below(300)));
    }
    // New files on both sides.
    c.write(0, "new-on-a.txt", b"made on side A");
    c.write(3, "new-on-b.txt", b"made on side B");
    c.run_for(ms(rng.below(25_000)));
    c.rejoin(&[0, 1]);
    c.converge(secs(90));
    c.assert_stays_converged(QUIET);
    let have = contents(&mut c, 0);
    for data in &edits {
        assert!(
            have.contains(&hash(data)),
            "seed {seed}: an edit was lost: {:?}",
            String::from_utf8_lossy(data)
        );
    }
    for (f, oa, ob) in &plan {
        let exists = c.exists(0, f);
        match (oa, ob) {
            // Someone edited it: an edit is never undone by a delete.
            (Op::Edit, _) | (_, Op::Edit) => assert!(exists, "seed {seed}: {f} ({oa:?}/{ob:?}) is gone"),
            // Deleted, and nobody edited it: it stays deleted.
            (Op::Delete, _) | (_, Op::Delete) => assert!(!exists, "seed {seed}: {f} ({oa:?}/{ob:?}) came back"),
            (Op::Keep, Op::Keep) => assert!(exists),
        }
        let copies = conflict_copies(&mut c, 0, f).len();
        let want = usize::from(*oa == Op::Edit && *ob == Op::Edit);
        assert_eq!(copies, want, "seed {seed}: {f} ({oa:?}/{ob:?}) has {copies} conflict copies");
    }
    c
}

#[test]
fn a_partition_with_changes_on_both_sides() {
    for seed in seeds(14) {
        partition_both_sides(seed);
    }
}

/// A seed replays exactly, conflict copies and all.
#[test]
fn data_safety_scenarios_replay() {
    let (mut a, mut b) = (partition_both_sides(FIXED), partition_both_sides(FIXED));
    assert_eq!(a.digest(), b.digest());
}

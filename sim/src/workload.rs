//! The random workload: seeded, replayable sequences of everything a user
//! can do to a synced folder, on every node, interleaved with every fault
//! (partitions, crashes, a full, read-only or failing disk). After a quiet
//! period the run checks invariants, not scripted outcomes:
//!
//! - every node holds the same tree, and no temp file is visible;
//! - no write is lost: every content a user wrote, and that no user
//!   replaced or deleted while it was on their disk, is still somewhere
//!   (the winner, a renamed file, or a conflict copy);
//! - nothing partial: every file holds content some user wrote;
//! - no delete came back: a file deleted by a user who had seen its latest
//!   write, with nothing done to it after, stays gone.
//!
//! `run(seed, &mix)` is one run; `sim/tests/random.rs` runs a fixed number
//! of seeds per mix under `cargo test`, and `just sim N` runs more.

use crate::cluster::{Cluster, Options, Rng};
use crate::tree::{Item, Tree};
use dirsync::fs::temp::DiskFault;
use std::collections::BTreeSet;
use std::time::Duration;

/// What a run draws from, and how much.
#[derive(Debug, Clone)]
pub struct Mix {
    pub name: &'static str,
    pub nodes: usize,
    /// User operations (each followed by a short random pause).
    pub steps: usize,
    /// Percent of steps that start a fault instead.
    pub fault_percent: u64,
    /// Percent of steps that are rapid concurrent edits of one path.
    pub race_percent: u64,
}

/// The mixes `cargo test` and `just sim` run.
pub const MIXES: &[Mix] = &[
    Mix {
        name: "everyday",
        nodes: 3,
        steps: 60,
        fault_percent: 0,
        race_percent: 10,
    },
    Mix {
        name: "faults",
        nodes: 3,
        steps: 60,
        fault_percent: 15,
        race_percent: 10,
    },
];

const SECOND_NS: i128 = 1_000_000_000;
/// 2300-01-01 and 1950-01-01, in ns: past the end of 64-bit nanoseconds,
/// and before the epoch.
const FAR_FUTURE: i128 = 10_413_792_000 * SECOND_NS;
const FAR_PAST: i128 = -631_152_000 * SECOND_NS;
/// How long the cluster gets to settle after the last fault is undone.
const SETTLE_WITHIN: Duration = Duration::from_secs(900);

/// Folder and file names the paths are drawn from: few, so that
/// operations meet on the same paths; odd ones among them.
const FOLDERS: &[&str] = &["", "a", "b", "a/deep", "ünï code", "sp ace"];
const NAMES: &[&str] = &[
    "f0.txt",
    "f1.txt",
    "F1.txt",
    "notes",
    "x",
    ".hidden",
    ".dirsync-tmp-notes.txt",
    "-dash",
    "emoji 😀.md",
    "tab\there",
    "new\nline",
];

/// A fault in force, and when it ends.
enum Undo {
    Heal(usize),
    Restart(usize),
    DiskOk(usize),
}

/// The oracle's memory of what users did.
#[derive(Default)]
struct Oracle {
    /// Every content any user wrote.
    written: BTreeSet<[u8; 32]>,
    /// Contents that must still exist somewhere: written, and not yet
    /// replaced or deleted by a user who had them on disk. (A set: two
    /// users who write the same bytes, e.g. both truncating one file to its
    /// half, make one content, which a later delete that saw it supersedes;
    /// found by the workload, faults seed 7200021693.)
    must_survive: BTreeSet<[u8; 32]>,
    /// Files deleted while every node held the same version of them and
    /// no fault was in force (the delete saw everything): gone for good
    /// unless something is done to the path (or a folder above) later.
    deleted_after_seeing_all: BTreeSet<String>,
}

impl Oracle {
    fn wrote(&mut self, c: &Cluster, path: &str, content: &[u8]) {
        let h = *blake3::hash(content).as_bytes();
        c.note(format!("oracle: {path:?} holds {}", short(&h)));
        self.written.insert(h);
        self.must_survive.insert(h);
        self.touched(path);
    }

    /// A user replaced or deleted `hash`, which their disk held: that copy
    /// no longer needs to survive.
    fn superseded(&mut self, hash: [u8; 32]) {
        self.must_survive.remove(&hash);
    }

    /// Something was done at `path`: any earlier delete there (or below,
    /// or above) is no longer the last word.
    fn touched(&mut self, path: &str) {
        let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        self.deleted_after_seeing_all.retain(|d| !within(d, path) && !within(path, d));
    }
}

/// One run of `mix` at `seed`. Panics with the seed and a replay command
/// when an invariant fails.
pub fn run(seed: u64, mix: &Mix) {
    let mut opts = Options::new(&format!("random-{}", mix.name), mix.nodes, seed);
    opts.rescan_interval = Duration::from_secs(3600);
    let mut c = Cluster::new(opts);
    let mut rng = Rng::new(seed ^ 0x0a11_0b5e);
    let mut oracle = Oracle::default();
    for i in 0..6 {
        let host = rng.below(mix.nodes as u64) as usize;
        let path = format!("{}seed{i}.txt", pick_folder(&mut rng));
        let content = content(&mut rng);
        oracle.wrote(&c, &path, &content);
        c.seed_file(host, &path, &content);
    }
    c.start_all();
    c.run_for(Duration::from_secs(3));
    let mut undo: Vec<(Duration, Undo)> = Vec::new();
    for _ in 0..mix.steps {
        let now = c.elapsed();
        for (_, u) in extract_due(&mut undo, now) {
            end_fault(&mut c, u);
        }
        let roll = rng.below(100);
        if roll < mix.fault_percent {
            start_fault(&mut c, &mut rng, &mut undo);
        } else if roll < mix.fault_percent + mix.race_percent {
            race(&mut c, &mut rng, &mut oracle, mix.nodes);
        } else {
            let host = rng.below(mix.nodes as u64) as usize;
            if c.is_running(host) {
                user_op(&mut c, &mut rng, &mut oracle, host, undo.is_empty());
            }
        }
        c.run_for(Duration::from_millis(rng.below(600)));
    }
    for (_, u) in undo.drain(..) {
        end_fault(&mut c, u);
    }
    c.forget_all();
    c.converge(SETTLE_WITHIN);
    check(&mut c, &oracle, seed, mix);
}

fn replay(seed: u64, mix: &Mix) -> String {
    format!(
        "replay: SIM_SEED={seed} SIM_MIX={} cargo test -p dirsync-sim --test random -- --nocapture",
        mix.name
    )
}

/// The invariants, on the converged tree.
fn check(c: &mut Cluster, oracle: &Oracle, seed: u64, mix: &Mix) {
    let tree = c.tree(0);
    let present: BTreeSet<[u8; 32]> = tree.values().filter_map(Item::hash).collect();
    let mut wrong = String::new();
    for h in &oracle.must_survive {
        if !present.contains(h) {
            wrong += &format!("  a write was lost: content {} is nowhere\n", short(h));
        }
    }
    for (path, item) in &tree {
        if let Some(h) = item.hash() {
            if !oracle.written.contains(&h) {
                wrong += &format!("  {path:?} holds content no user wrote ({})\n", short(&h));
            }
        }
    }
    for path in &oracle.deleted_after_seeing_all {
        if matches!(tree.get(path), Some(Item::File { .. })) {
            wrong += &format!("  {path:?} was deleted after its last write and came back\n");
        }
    }
    if !wrong.is_empty() {
        c.fail(&format!("invariants broken ({}):\n{wrong}", replay(seed, mix)));
    }
}

fn short(h: &[u8; 32]) -> String {
    h[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn extract_due(undo: &mut Vec<(Duration, Undo)>, now: Duration) -> Vec<(Duration, Undo)> {
    let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(undo).into_iter().partition(|(t, _)| *t <= now);
    *undo = rest;
    due
}

fn start_fault(c: &mut Cluster, rng: &mut Rng, undo: &mut Vec<(Duration, Undo)>) {
    let host = rng.below(c.len() as u64) as usize;
    // One fault per host at a time.
    if !c.is_running(host)
        || undo
            .iter()
            .any(|(_, u)| matches!(u, Undo::Heal(h) | Undo::Restart(h) | Undo::DiskOk(h) if *h == host))
    {
        return;
    }
    let until = c.elapsed() + Duration::from_millis(1_000 + rng.below(15_000));
    match rng.below(5) {
        0 => {
            c.isolate(host);
            undo.push((until, Undo::Heal(host)));
        }
        1 => {
            c.crash(host);
            undo.push((until, Undo::Restart(host)));
        }
        n => {
            let fault = [DiskFault::NoSpace, DiskFault::ReadOnly, DiskFault::Io][n as usize - 2];
            c.disk_fault(host, Some(fault));
            undo.push((until, Undo::DiskOk(host)));
        }
    }
}

fn end_fault(c: &mut Cluster, u: Undo) {
    match u {
        Undo::Heal(h) => c.heal(h),
        Undo::Restart(h) => c.restart(h),
        Undo::DiskOk(h) => c.disk_fault(h, None),
    }
}

fn pick_folder(rng: &mut Rng) -> String {
    match *rng.pick(FOLDERS) {
        "" => String::new(),
        f => format!("{f}/"),
    }
}

fn content(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1 => 70_000 + rng.below(60_000) as usize,
        _ => 1 + rng.below(2_000) as usize,
    };
    rng.bytes(len)
}

/// A path to create: a known name in a known folder, sometimes a long one.
fn fresh_path(rng: &mut Rng) -> String {
    let name = match rng.below(12) {
        0 => format!("{}.txt", "l".repeat(240)),
        1 => format!("a.{}", "e".repeat(240)),
        _ => rng.pick(NAMES).to_string(),
    };
    format!("{}{name}", pick_folder(rng))
}

fn files_of(tree: &Tree) -> Vec<String> {
    tree.iter().filter(|(_, i)| i.hash().is_some()).map(|(p, _)| p.clone()).collect()
}

fn dirs_of(tree: &Tree) -> Vec<String> {
    tree.iter().filter(|(_, i)| i.hash().is_none()).map(|(p, _)| p.clone()).collect()
}

/// Whether `path` can be created on `host` as a file: nothing is there,
/// and no file lies where a folder on the way must be.
fn free(tree: &Tree, path: &str) -> bool {
    if tree.contains_key(path) {
        return false;
    }
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if matches!(tree.get(parent), Some(Item::File { .. })) {
            return false;
        }
        p = parent;
    }
    true
}

/// What `host` holds at and below `path`: these are replaced by what the
/// user does there.
fn superseded_under(oracle: &mut Oracle, tree: &Tree, path: &str) {
    let prefix = format!("{path}/");
    for (p, item) in tree {
        if p == path || p.starts_with(&prefix) {
            if let Some(h) = item.hash() {
                oracle.superseded(h);
            }
        }
    }
}

/// One user operation on `host`.
fn user_op(c: &mut Cluster, rng: &mut Rng, oracle: &mut Oracle, host: usize, no_fault: bool) {
    let tree = c.tree(host);
    let files = files_of(&tree);
    let dirs = dirs_of(&tree);
    match rng.below(13) {
        // Create.
        0..=2 => {
            let path = fresh_path(rng);
            if free(&tree, &path) {
                let content = content(rng);
                oracle.wrote(c, &path, &content);
                c.write(host, &path, &content);
            }
        }
        // Append, overwrite, truncate.
        3..=5 if !files.is_empty() => {
            let path = rng.pick(&files).clone();
            let old = c.read(host, &path).unwrap_or_default();
            let new = match rng.below(3) {
                0 => {
                    let more = 1 + rng.below(500) as usize;
                    [old.clone(), rng.bytes(more)].concat()
                }
                1 => content(rng),
                _ => old[..old.len() / 2].to_vec(),
            };
            superseded_under(oracle, &tree, &path);
            oracle.wrote(c, &path, &new);
            c.write(host, &path, &new);
        }
        // Delete a file or a folder.
        6 if !files.is_empty() || !dirs.is_empty() => {
            let all: Vec<String> = files.iter().chain(&dirs).cloned().collect();
            let path = rng.pick(&all).clone();
            let held = tree.get(&path).and_then(Item::hash);
            let everywhere = (0..c.len()).all(|o| c.is_running(o) && c.tree(o).get(&path).and_then(Item::hash) == held);
            superseded_under(oracle, &tree, &path);
            oracle.touched(&path);
            if held.is_some() && no_fault && everywhere {
                oracle.deleted_after_seeing_all.insert(path.clone());
            }
            c.delete(host, &path);
        }
        // Rename or move across folders (a case-only rename among them).
        7 | 8 if !files.is_empty() || !dirs.is_empty() => {
            let all: Vec<String> = files.iter().chain(&dirs).cloned().collect();
            let from = rng.pick(&all).clone();
            let to = if rng.chance(25) {
                match from.rsplit_once('/') {
                    Some((d, n)) => format!("{d}/{}", flip_case(n)),
                    None => flip_case(&from),
                }
            } else {
                fresh_path(rng)
            };
            if to != from && free(&tree, &to) && !to.starts_with(&format!("{from}/")) {
                oracle.touched(&from);
                oracle.touched(&to);
                c.rename(host, &from, &to);
            }
        }
        // A file replaced by a folder, and a folder by a file.
        9 if !files.is_empty() => {
            let path = rng.pick(&files).clone();
            superseded_under(oracle, &tree, &path);
            c.delete(host, &path);
            c.mkdir(host, &path);
            let inner = format!("{path}/inner.txt");
            let content = content(rng);
            oracle.wrote(c, &inner, &content);
            c.write(host, &inner, &content);
        }
        10 if !dirs.is_empty() => {
            let path = rng.pick(&dirs).clone();
            superseded_under(oracle, &tree, &path);
            c.delete(host, &path);
            let content = content(rng);
            oracle.wrote(c, &path, &content);
            c.write(host, &path, &content);
        }
        // Far-past and far-future mtimes, or the executable bit.
        11 if !files.is_empty() => {
            let path = rng.pick(&files).clone();
            oracle.touched(&path);
            if rng.chance(30) {
                c.chmod(host, &path, rng.chance(50));
            } else {
                let when = if rng.chance(50) { FAR_FUTURE } else { FAR_PAST };
                c.touch(host, &path, when + rng.below(1_000_000_000) as i128);
            }
        }
        // Make a folder.
        _ => {
            let path = format!("{}{}", pick_folder(rng), rng.pick(&["d1", "d2", "x"]));
            if free(&tree, &path) {
                oracle.touched(&path);
                c.mkdir(host, &path);
            }
        }
    }
}

/// Rapid concurrent edits of one path on several nodes, a few hundred
/// milliseconds apart (issue 13, bug 7).
fn race(c: &mut Cluster, rng: &mut Rng, oracle: &mut Oracle, nodes: usize) {
    let path = format!("{}race.txt", pick_folder(rng));
    for _ in 0..(2 + rng.below(4)) {
        let host = rng.below(nodes as u64) as usize;
        if !c.is_running(host) {
            continue;
        }
        let tree = c.tree(host);
        if !free(&tree, &path) && !matches!(tree.get(&path), Some(Item::File { .. })) {
            continue;
        }
        superseded_under(oracle, &tree, &path);
        let len = 1 + rng.below(300) as usize;
        let content = rng.bytes(len);
        oracle.wrote(c, &path, &content);
        c.write(host, &path, &content);
        c.run_for(Duration::from_millis(rng.below(400)));
    }
}

fn flip_case(name: &str) -> String {
    name.chars()
        .map(|ch| {
            if ch.is_lowercase() {
                ch.to_uppercase().next().unwrap_or(ch)
            } else {
                ch.to_lowercase().next().unwrap_or(ch)
            }
        })
        .collect()
}

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
//! - no delete came back: a file deleted by a user whose disk held what
//!   the last change of it left, with nothing done to it after, stays gone,
//!   whatever crashed or was cut off meanwhile (issue 24: a node down when
//!   the delete was made never saw it, and must not undo it);
//! - conflict copies only where writes raced: every conflict copy holds a
//!   content that took part in a change made without seeing the one
//!   before it.
//!
//! `run(seed, &mix)` is one run; `sim/tests/random.rs` runs a fixed number
//! of seeds per mix under `cargo test`, and `just sim N` runs more.

use crate::cluster::{Cluster, Options, Rng};
use crate::tree::{Item, Tree};
use dirsync::fs::temp::DiskFault;
use std::collections::{BTreeMap, BTreeSet};
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
/// What the name of every conflict copy holds.
const CONFLICT_MARK: &str = ".sync-conflict-";
/// How long the cluster gets to settle after the last fault is undone.
const SETTLE_WITHIN: Duration = Duration::from_secs(900);

/// What the workload's symlinks point to: inside DIR and outside it, up
/// and out of it, absolute, dangling. Never followed by dirsync, and never
/// written through by the workload (`free`).
const LINK_TARGETS: &[&str] = &["f0.txt", "a", "../outside", "..", "/etc", "/nowhere/at/all", "a/deep/x"];
/// The modes `chmod` gives files, and folders (which keep the owner's
/// rwx, or the workload could not write inside them).
const FILE_MODES: &[u32] = &[0o644, 0o755, 0o600, 0o444, 0o640, 0o700, 0o664, 0o711];
const FOLDER_MODES: &[u32] = &[0o755, 0o700, 0o750, 0o775];
/// The extended attributes the workload sets (`None`: removes), with
/// `--xattrs` on every node.
const XATTR_NAMES: &[&str] = &["user.tag", "user.xdg.origin.url"];
const XATTR_VALUES: &[Option<&str>] = &[Some("a"), Some(""), Some("https://example.invalid/x"), None];

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
    /// The host's exclusion rule goes (issue 24, case 2).
    Include(usize),
    /// The program holding a file open on the host closes it (issue 26,
    /// item 8).
    Release(usize),
}

/// A name a conflict copy could have, in any case (a user may rename a
/// copy to upper case and back).
fn named_like_a_conflict_copy(path: &str) -> bool {
    path.to_lowercase().contains(CONFLICT_MARK)
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
    /// Files deleted by a user whose disk held what the last change of
    /// them left, and never changed concurrently (the delete saw every
    /// change): gone for good unless something is done to the path (or a
    /// folder above) later.
    deleted_after_seeing_all: BTreeSet<String>,
    /// What each file path held after the last user change of it, as that
    /// user's disk showed it (`None`: deleted).
    latest: BTreeMap<String, Option<Item>>,
    /// Paths some user changed while their disk did not hold what the last
    /// change there left: a concurrent change, which may win over a later
    /// delete and may leave a conflict copy.
    raced: BTreeSet<String>,
    /// Contents that took part in a concurrent change: the only ones a
    /// conflict copy may hold.
    raced_contents: BTreeSet<[u8; 32]>,
    /// Every content each file path held after a user's change: a change
    /// made without holding the latest races with all it missed.
    history: BTreeMap<String, Vec<[u8; 32]>>,
    /// The folder each host excludes, and when its rule went (`None`: in
    /// force). A deletion made there travels nowhere: the peers' copies
    /// come back when the rule goes (README, selective sync).
    excluded: BTreeMap<usize, (String, Option<Duration>)>,
    /// The file a program holds open for writing on each host: that user
    /// neither moves nor deletes it meanwhile, and the node must not
    /// replace it under the program.
    held: BTreeMap<usize, String>,
}

impl Oracle {
    fn wrote(&mut self, c: &Cluster, path: &str, content: &[u8]) {
        let h = *blake3::hash(content).as_bytes();
        c.note(format!("oracle: {path:?} holds {}", short(&h)));
        self.written.insert(h);
        self.must_survive.insert(h);
        if named_like_a_conflict_copy(path) {
            // Written by a user into a conflict copy: theirs to keep.
            self.raced_contents.insert(h);
        }
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

    /// Whether `tree` (a user's disk) holds at `path` what the last user
    /// change of it left. A path no change is known of counts as held.
    fn holds_latest(&self, tree: &Tree, path: &str) -> bool {
        let file = tree.get(path).filter(|i| i.hash().is_some());
        match self.latest.get(path) {
            None => true,
            Some(latest) => file == latest.as_ref(),
        }
    }

    /// A user whose disk is `tree` is about to change file `path`: a
    /// change made without holding the last one is concurrent with it.
    fn changing(&mut self, tree: &Tree, path: &str) {
        // A file made elsewhere at a folder on the way, not here yet: this
        // write (inside the folder here) races with it.
        let mut above = path;
        while let Some((parent, _)) = above.rsplit_once('/') {
            above = parent;
            if let Some(Some(file)) = self.latest.get(above) {
                if tree.get(above) != Some(file) {
                    self.raced.insert(above.to_string());
                    self.raced_contents.extend(file.hash());
                }
            }
        }
        // A folder made elsewhere at this path, holding content this disk
        // lacks: this write races with it (a folder holding unseen content
        // beats a file, which becomes a copy; found by the workload, faults
        // seed 7200021802, where the writer's disk had refused the folder).
        let prefix = format!("{path}/");
        let unseen_below: Vec<[u8; 32]> = self
            .latest
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, latest)| tree.get(*p) != latest.as_ref())
            .filter_map(|(_, latest)| latest.as_ref().and_then(Item::hash))
            .collect();
        if !unseen_below.is_empty() {
            self.raced.insert(path.to_string());
            self.raced_contents.extend(unseen_below);
        }
        if !self.holds_latest(tree, path) {
            self.raced.insert(path.to_string());
            let missed = self.history.get(path).into_iter().flatten().copied();
            let ours = tree.get(path).and_then(Item::hash);
            self.raced_contents.extend(missed.chain(ours).collect::<Vec<_>>());
        }
    }

    /// A user whose disk is `tree` writes `path` inside a folder that
    /// another disk holds as a file (made there, and not seen here; its
    /// last word may since be a delete or rename this disk did not see
    /// either, so `latest` does not tell): the write races with that file
    /// (a folder holding unseen content beats a file, which becomes a
    /// copy; found by the workload, faults seed 7200021837). Likewise a
    /// file written where another disk holds a folder with anything below
    /// it this disk lacks, a folder included (faults seed 7200022015: a
    /// folder moved there, that this read-only disk could not take).
    fn shapes_elsewhere(&mut self, tree: &Tree, elsewhere: &[Tree], path: &str) {
        let prefix = format!("{path}/");
        for other in elsewhere {
            let unseen_below = || {
                other
                    .range(prefix.clone()..)
                    .take_while(|(p, _)| p.starts_with(&prefix))
                    .any(|(p, item)| tree.get(p) != Some(item))
            };
            if matches!(other.get(path), Some(Item::Dir { .. })) && unseen_below() {
                self.raced.insert(path.to_string());
            }
        }
        let mut above = path;
        while let Some((parent, _)) = above.rsplit_once('/') {
            above = parent;
            for other in elsewhere {
                if let Some(Item::File { hash, .. }) = other.get(above) {
                    if tree.get(above) != other.get(above) {
                        self.raced.insert(above.to_string());
                        self.raced_contents.insert(*hash);
                    }
                }
            }
        }
    }

    /// A user changed file `path` on `host`: what it holds now is the
    /// latest change (a concurrent one's content may be a conflict copy).
    fn changed(&mut self, c: &mut Cluster, host: usize, path: &str) {
        let now = c.tree(host).get(path).filter(|i| i.hash().is_some()).cloned();
        // Raced, or moved by a user to a conflict copy's name (a
        // case-only rename of one: found by the workload, everyday seed
        // 7100021474).
        if self.raced.contains(path) || named_like_a_conflict_copy(path) {
            self.raced_contents.extend(now.as_ref().and_then(Item::hash));
        }
        if let Some(h) = now.as_ref().and_then(Item::hash) {
            self.history.entry(path.to_string()).or_default().push(h);
        }
        self.latest.insert(path.to_string(), now);
    }

    /// The folder `host` excludes at `now`, if any: from the moment its
    /// rule is written (the node reads it within a second: a change
    /// meanwhile may travel or not) until a moment after it goes.
    fn excluded_on(&self, host: usize, now: Duration) -> Option<&str> {
        const READ_WITHIN: Duration = Duration::from_millis(1_500);
        match self.excluded.get(&host) {
            Some((folder, ended)) if ended.is_none_or(|t| now < t + READ_WITHIN) => Some(folder),
            _ => None,
        }
    }

    /// A user whose disk is `tree` deletes (or moves away) every file at
    /// and below `path`: those it held in their latest change, never
    /// changed concurrently, must stay gone. `elsewhere`: the other disks;
    /// `excluded`: the folder this disk's host excludes, where a deletion
    /// stays on this disk.
    fn deleting(&mut self, tree: &Tree, elsewhere: &[Tree], path: &str, excluded: Option<&str>) {
        let prefix = format!("{path}/");
        let files: Vec<String> = tree
            .iter()
            .filter(|(p, i)| i.hash().is_some() && (*p == path || p.starts_with(&prefix)))
            .map(|(p, _)| p.clone())
            .collect();
        for f in files {
            if excluded.is_some_and(|folder| f == folder || f.starts_with(&format!("{folder}/"))) {
                // Deleted here only: the peers keep their copy.
                continue;
            }
            if !self.holds_latest(tree, &f) {
                // A delete that missed the last change: that change wins
                // against it (an edit beats a delete that did not see it)
                // and stays the latest, raced.
                self.changing(tree, &f);
                continue;
            }
            if !self.raced.contains(&f) && self.latest.contains_key(&f) {
                self.deleted_after_seeing_all.insert(f.clone());
            }
            self.latest.insert(f, None);
        }
        // Something below it on another disk that this one does not hold
        // (made or changed elsewhere, not here yet): this deletion did not
        // see it, so whatever takes the path races with it (a folder
        // holding unseen content beats a file, which becomes a copy).
        let mut unseen = false;
        for other in elsewhere {
            for (p, item) in other.iter().filter(|(p, _)| p.starts_with(&prefix)) {
                if tree.get(p) != Some(item) {
                    unseen = true;
                    self.raced_contents.extend(item.hash());
                }
            }
        }
        if unseen {
            self.raced.insert(path.to_string());
            self.raced_contents.extend(tree.get(path).and_then(Item::hash));
        }
    }
}

/// One run of `mix` at `seed`. Panics with the seed and a replay command
/// when an invariant fails.
pub fn run(seed: u64, mix: &Mix) {
    let mut opts = Options::new(&format!("random-{}", mix.name), mix.nodes, seed);
    opts.rescan_interval = Duration::from_secs(3600);
    opts.status = true;
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
    for (path, item) in c.tree(0) {
        if item.hash().is_some() {
            oracle.latest.insert(path, Some(item));
        }
    }
    let mut undo: Vec<(Duration, Undo)> = Vec::new();
    for _ in 0..mix.steps {
        let now = c.elapsed();
        for (_, u) in extract_due(&mut undo, now) {
            end_fault(&mut c, &mut oracle, u);
        }
        let roll = rng.below(100);
        if roll < mix.fault_percent {
            start_fault(&mut c, &mut rng, &mut oracle, &mut undo);
        } else if roll < mix.fault_percent + mix.race_percent {
            race(&mut c, &mut rng, &mut oracle, mix.nodes);
        } else {
            let host = rng.below(mix.nodes as u64) as usize;
            if c.is_running(host) {
                user_op(&mut c, &mut rng, &mut oracle, host);
            }
        }
        c.run_for(Duration::from_millis(rng.below(600)));
    }
    for (_, u) in undo.drain(..) {
        end_fault(&mut c, &mut oracle, u);
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
            if path.contains(CONFLICT_MARK) && !oracle.raced_contents.contains(&h) {
                wrong += &format!("  {path:?} is a conflict copy of {}, which no concurrent write made\n", short(&h));
            }
        }
    }
    for path in &oracle.deleted_after_seeing_all {
        if matches!(tree.get(path), Some(Item::File { .. })) {
            wrong += &format!("  {path:?} was deleted after its last change and came back\n");
        }
    }
    // What a user sees agrees: every node calls every peer synchronized,
    // with nothing left to receive from it and the same tree digest. Each
    // digest travels within a second of a change, but a connection that a
    // partition left stuck (turmoil's TCP drops what was sent meanwhile,
    // and what follows waits behind it) is only replaced after the idle
    // timeout; till then a status may show what it last heard.
    let mut shown = status_disagreements(c);
    for _ in 0..STATUS_WITHIN_S {
        if shown.is_empty() {
            break;
        }
        c.run_for(Duration::from_secs(1));
        shown = status_disagreements(c);
    }
    wrong += &shown;
    if !wrong.is_empty() {
        c.fail(&format!("invariants broken ({}):\n{wrong}", replay(seed, mix)));
    }
}

/// Seconds after convergence for every status to agree with the trees:
/// past the idle timeout (20 s) and a reconnection.
const STATUS_WITHIN_S: usize = 30;

/// Where a node's status disagrees with trees that agree: a peer shown
/// syncing, with files to receive, or with another tree digest.
fn status_disagreements(c: &mut Cluster) -> String {
    let mut wrong = String::new();
    for host in 0..c.len() {
        for p in c.status(host).peers {
            if p.digest != Some(p.ours) {
                wrong += &format!(
                    "  host {host} holds a tree digest ({}) that peer {} does not say it holds ({:?})\n",
                    p.ours, p.id, p.digest
                );
            }
            if !p.synced || p.receive_files > 0 {
                wrong += &format!(
                    "  host {host} shows peer {} {} with {} files to receive, though every tree agrees\n",
                    p.id,
                    if p.synced { "synchronized" } else { "syncing" },
                    p.receive_files
                );
            }
        }
    }
    wrong
}

fn short(h: &[u8; 32]) -> String {
    h[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn extract_due(undo: &mut Vec<(Duration, Undo)>, now: Duration) -> Vec<(Duration, Undo)> {
    let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(undo).into_iter().partition(|(t, _)| *t <= now);
    *undo = rest;
    due
}

fn start_fault(c: &mut Cluster, rng: &mut Rng, oracle: &mut Oracle, undo: &mut Vec<(Duration, Undo)>) {
    let host = rng.below(c.len() as u64) as usize;
    // One fault per host at a time.
    if !c.is_running(host)
        || undo.iter().any(
            |(_, u)| matches!(u, Undo::Heal(h) | Undo::Restart(h) | Undo::DiskOk(h) | Undo::Include(h) | Undo::Release(h) if *h == host),
        )
    {
        return;
    }
    let until = c.elapsed() + Duration::from_millis(1_000 + rng.below(15_000));
    match rng.below(8) {
        // A program (a database) holds a file open for writing and writes
        // it in place a few times, while another host changes the same
        // file: the peer's version must wait, never replace the file under
        // the program (issue 26, item 8).
        7 => {
            let tree = c.tree(host);
            let files = files_of(&tree);
            if files.is_empty() {
                return;
            }
            let path = rng.pick(&files).clone();
            if !c.hold_open(host, &path) {
                return;
            }
            oracle.held.insert(host, path.clone());
            undo.push((until, Undo::Release(host)));
            let other = (host + 1 + rng.below(c.len() as u64 - 1) as usize) % c.len();
            for _ in 0..1 + rng.below(3) {
                c.run_for(Duration::from_millis(rng.below(400)));
                let writer = if rng.chance(50) && c.is_running(other) { other } else { host };
                let tree = c.tree(writer);
                if matches!(tree.get(&path), Some(Item::File { .. })) {
                    let content = content(rng);
                    superseded_under(oracle, &tree, &path);
                    user_write(c, oracle, writer, &tree, &path, &content);
                }
            }
        }
        0 => {
            c.isolate(host);
            undo.push((until, Undo::Heal(host)));
        }
        1 => {
            c.crash(host);
            undo.push((until, Undo::Restart(host)));
        }
        // A crash on the receive path: right after a file another node
        // wrote arrived here, before the index's next commit (issue 24,
        // case 1), or a moment later.
        5 => {
            let from = (host + 1 + rng.below(c.len() as u64 - 1) as usize) % c.len();
            if c.is_running(from) {
                let path = format!("{}recv{}", pick_folder(rng), rng.below(1000));
                let tree = c.tree(from);
                if free(&tree, &path) {
                    let content = content(rng);
                    user_write(c, oracle, from, &tree, &path, &content);
                    c.run_until(Duration::from_secs(5), |c| c.read(host, &path).as_deref() == Some(&content[..]));
                    c.run_for(Duration::from_millis(rng.below(50)));
                }
            }
            c.crash(host);
            undo.push((until, Undo::Restart(host)));
        }
        // A folder excluded on one host for a while: the others go on
        // changing and deleting there; when the rule goes, nothing they
        // deleted comes back.
        6 => {
            let folder = *rng.pick(&FOLDERS[1..]);
            c.set_exclusion(host, &format!("{folder}/\n"));
            oracle.excluded.insert(host, (folder.to_string(), None));
            undo.push((until, Undo::Include(host)));
        }
        n => {
            let fault = [DiskFault::NoSpace, DiskFault::ReadOnly, DiskFault::Io][(n as usize - 2) % 3];
            c.disk_fault(host, Some(fault));
            undo.push((until, Undo::DiskOk(host)));
        }
    }
}

fn end_fault(c: &mut Cluster, oracle: &mut Oracle, u: Undo) {
    match u {
        Undo::Heal(h) => c.heal(h),
        Undo::Restart(h) => c.restart(h),
        Undo::DiskOk(h) => c.disk_fault(h, None),
        Undo::Include(h) => {
            c.set_exclusion(h, "");
            if let Some((_, ended)) = oracle.excluded.get_mut(&h) {
                *ended = Some(c.elapsed());
            }
        }
        Undo::Release(h) => {
            if let Some(path) = oracle.held.remove(&h) {
                if let Err(e) = c.close_held(h, &path) {
                    c.fail(&e);
                }
            }
        }
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
/// and no file or symlink lies where a folder on the way must be (the
/// workload never writes through a link: it may lead out of DIR).
fn free(tree: &Tree, path: &str) -> bool {
    if tree.contains_key(path) {
        return false;
    }
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if matches!(tree.get(parent), Some(Item::File { .. } | Item::Link { .. })) {
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

/// The trees of every host but `host`.
fn others(c: &mut Cluster, host: usize) -> Vec<Tree> {
    (0..c.len()).filter(|o| *o != host).map(|o| c.tree(o)).collect()
}

/// Write `content` to file `path` on `host`, as a user does.
fn user_write(c: &mut Cluster, oracle: &mut Oracle, host: usize, tree: &Tree, path: &str, content: &[u8]) {
    oracle.shapes_elsewhere(tree, &others(c, host), path);
    oracle.changing(tree, path);
    oracle.wrote(c, path, content);
    c.write(host, path, content);
    oracle.changed(c, host, path);
}

/// One user operation on `host`.
fn user_op(c: &mut Cluster, rng: &mut Rng, oracle: &mut Oracle, host: usize) {
    let tree = c.tree(host);
    let excluded = oracle.excluded_on(host, c.elapsed()).map(str::to_string);
    // The user leaves the file a program holds open here where it is.
    let held = oracle.held.get(&host).cloned().unwrap_or_default();
    let files: Vec<String> = files_of(&tree).into_iter().filter(|f| *f != held).collect();
    // Folders, and symlinks, which go the ways folders go: deleted,
    // renamed, replaced by a file.
    let dirs: Vec<String> = dirs_of(&tree).into_iter().filter(|d| !held.starts_with(&format!("{d}/"))).collect();
    match rng.below(16) {
        // Create.
        0..=2 => {
            let path = fresh_path(rng);
            if free(&tree, &path) {
                let content = content(rng);
                user_write(c, oracle, host, &tree, &path, &content);
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
            user_write(c, oracle, host, &tree, &path, &new);
        }
        // Delete a file or a folder.
        6 if !files.is_empty() || !dirs.is_empty() => {
            let all: Vec<String> = files.iter().chain(&dirs).cloned().collect();
            let path = rng.pick(&all).clone();
            superseded_under(oracle, &tree, &path);
            oracle.touched(&path);
            oracle.deleting(&tree, &others(c, host), &path, excluded.as_deref());
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
                // Where each moved file lands: a change there.
                let prefix = format!("{from}/");
                let moved: Vec<String> = tree
                    .keys()
                    .filter(|p| tree[*p].hash().is_some() && (**p == from || p.starts_with(&prefix)))
                    .map(|p| format!("{to}{}", &p[from.len()..]))
                    .collect();
                // The destination itself too: a folder moved where a
                // file was made elsewhere meanwhile races with it.
                let landed: BTreeSet<String> = moved.into_iter().chain([to.clone()]).collect();
                for dest in &landed {
                    oracle.changing(&tree, dest);
                }
                oracle.deleting(&tree, &others(c, host), &from, excluded.as_deref());
                c.rename(host, &from, &to);
                for dest in &landed {
                    oracle.changed(c, host, dest);
                }
            }
        }
        // A file replaced by a folder, and a folder by a file.
        9 if !files.is_empty() => {
            let path = rng.pick(&files).clone();
            superseded_under(oracle, &tree, &path);
            oracle.changing(&tree, &path);
            oracle.deleting(&tree, &others(c, host), &path, excluded.as_deref());
            c.delete(host, &path);
            c.mkdir(host, &path);
            let inner = format!("{path}/inner.txt");
            let content = content(rng);
            user_write(c, oracle, host, &tree, &inner, &content);
        }
        10 if !dirs.is_empty() => {
            let path = rng.pick(&dirs).clone();
            superseded_under(oracle, &tree, &path);
            oracle.deleting(&tree, &others(c, host), &path, excluded.as_deref());
            c.delete(host, &path);
            let content = content(rng);
            user_write(c, oracle, host, &tree, &path, &content);
        }
        // Far-past and far-future mtimes, or permission bits.
        11 if !files.is_empty() => {
            let path = rng.pick(&files).clone();
            oracle.touched(&path);
            oracle.changing(&tree, &path);
            if rng.chance(30) {
                c.chmod(host, &path, *rng.pick(FILE_MODES));
            } else if rng.chance(30) {
                let value = rng.pick(XATTR_VALUES).map(str::as_bytes);
                let name = *rng.pick::<&str>(XATTR_NAMES);
                c.set_xattr(host, &path, name, value);
            } else {
                let when = if rng.chance(50) { FAR_FUTURE } else { FAR_PAST };
                c.touch(host, &path, when + rng.below(1_000_000_000) as i128);
            }
            oracle.changed(c, host, &path);
        }
        // Files changed while they are on their way to the peers, as git
        // does with its objects (issue 24, case 0): new files, then
        // touched and some rewritten, faster than a want's round trip.
        12 => {
            let folder = pick_folder(rng);
            let made: Vec<String> = (0..1 + rng.below(4))
                .map(|i| format!("{folder}obj{}-{i}", rng.below(1000)))
                .collect();
            for path in &made {
                let tree = c.tree(host);
                if free(&tree, path) {
                    let content = content(rng);
                    user_write(c, oracle, host, &tree, path, &content);
                }
            }
            for _ in 0..1 + rng.below(3) {
                c.run_for(Duration::from_millis(rng.below(20)));
                let tree = c.tree(host);
                for path in made.iter().filter(|p| matches!(tree.get(*p), Some(Item::File { .. }))) {
                    if rng.chance(20) {
                        let content = content(rng);
                        superseded_under(oracle, &tree, path);
                        user_write(c, oracle, host, &tree, path, &content);
                    } else {
                        oracle.touched(path);
                        oracle.changing(&tree, path);
                        let now = c.now_ns() as i128;
                        c.touch(host, path, now);
                        oracle.changed(c, host, path);
                    }
                }
            }
        }
        // A symlink made, or retargeted (issue 28).
        14 => {
            let links: Vec<String> = dirs
                .iter()
                .filter(|d| matches!(tree.get(*d), Some(Item::Link { .. })))
                .cloned()
                .collect();
            let path = match rng.chance(40) && !links.is_empty() {
                true => rng.pick(&links).clone(),
                false => fresh_path(rng),
            };
            if free(&tree, &path) || links.contains(&path) {
                let target = *rng.pick(LINK_TARGETS);
                oracle.touched(&path);
                oracle.changing(&tree, &path);
                c.symlink(host, &path, target);
                oracle.changed(c, host, &path);
            }
        }
        // A file replaced by a symlink, or a folder's mode changed.
        15 => {
            if !files.is_empty() && rng.chance(50) {
                let path = rng.pick(&files).clone();
                superseded_under(oracle, &tree, &path);
                oracle.touched(&path);
                oracle.changing(&tree, &path);
                oracle.deleting(&tree, &others(c, host), &path, excluded.as_deref());
                let target = *rng.pick::<&str>(LINK_TARGETS);
                c.symlink(host, &path, target);
                oracle.changed(c, host, &path);
            } else if let Some(folder) = dirs
                .iter()
                .filter(|d| matches!(tree.get(*d), Some(Item::Dir { .. })))
                .nth(rng.below(4) as usize)
            {
                // A new version of the folder, as a mkdir there is: a file
                // made at its path elsewhere meanwhile races with it.
                let folder = folder.clone();
                oracle.touched(&folder);
                oracle.changing(&tree, &folder);
                if rng.chance(30) {
                    let value = rng.pick(XATTR_VALUES).map(str::as_bytes);
                    let name = *rng.pick::<&str>(XATTR_NAMES);
                    c.set_xattr(host, &folder, name, value);
                } else {
                    c.chmod(host, &folder, *rng.pick(FOLDER_MODES));
                }
            }
        }
        // Make a folder.
        _ => {
            let path = format!("{}{}", pick_folder(rng), rng.pick(&["d1", "d2", "x"]));
            if free(&tree, &path) {
                oracle.touched(&path);
                // A folder made where a file was made elsewhere races
                // with it.
                oracle.changing(&tree, &path);
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
        user_write(c, oracle, host, &tree, &path, &content);
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

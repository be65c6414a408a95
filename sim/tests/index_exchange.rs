//! Issue 14: the incremental index exchange in whole clusters. A node
//! that comes back after missing k changes receives those k entries, not
//! the index; one whose state directory was wiped gets everything and
//! loses nothing.

use dirsync_sim::{seeds, Cluster, Expect, Options, Rng};
use std::time::Duration;

const FIXED: u64 = 20_261_202;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Two nodes holding the same `files` files, converged and settled (each
/// has remembered how far the other's index came).
fn settled_pair(name: &str, seed: u64, files: usize) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut c = Cluster::new(Options::new(name, 2, seed));
    for i in 0..files {
        let len = rng.below(2000) as usize;
        let data = rng.bytes(len);
        c.seed_file(0, &format!("d{}/f{i}.txt", i % 7), &data);
    }
    c.start_all();
    c.converge(secs(60));
    c.run_for(secs(3));
    c
}

/// Edit `k` of the pair's files on node 0 (k different files when there
/// are 120); returns k.
fn edit_some(c: &mut Cluster, rng: &mut Rng, files: usize) -> u64 {
    let k = 1 + rng.below(20);
    for n in 0..k {
        let i = (n as usize * 6 + rng.below(5) as usize) % files;
        let path = format!("d{}/f{i}.txt", i % 7);
        let len = 1 + rng.below(500) as usize;
        let data = rng.bytes(len);
        c.write(0, &path, &data);
        c.expect(&path, Expect::File(*blake3::hash(&data).as_bytes()));
    }
    k
}

/// Bring node 1 back with `back` and wait (up to `within`) for the cluster
/// to converge; the index entries node 1 received meanwhile.
fn entries_on_return(c: &mut Cluster, back: impl FnOnce(&mut Cluster), within: Duration) -> u64 {
    let entries = |c: &Cluster| c.counters(1).values().index_entries_received;
    let before = entries(c);
    back(c);
    c.converge(within);
    entries(c) - before
}

/// How node 1 misses node 0's changes for a while.
#[derive(Clone, Copy, Debug)]
enum Away {
    /// Stopped cleanly (as SIGTERM stops it), then started again.
    Stopped,
    /// Cut off by a partition: the connection comes back, not the node.
    CutOff,
}

/// Node 1 is away while k files are edited on node 0, and comes back: it
/// is sent those k entries, where it used to be sent the whole index.
fn back_after_k_changes(seed: u64, away: Away) -> Cluster {
    const FILES: usize = 120;
    let mut c = settled_pair(&format!("back_after_k_changes_{away:?}"), seed, FILES);
    let mut rng = Rng::new(seed ^ 0xe1);
    match away {
        Away::Stopped => c.stop(1),
        Away::CutOff => c.isolate(1),
    }
    let k = edit_some(&mut c, &mut rng, FILES);
    // Cut off: long enough for both sides to see the connection dead.
    c.run_for(secs(match away {
        Away::Stopped => 2,
        Away::CutOff => 45,
    }));
    let sent = entries_on_return(
        &mut c,
        |c| match away {
            Away::Stopped => c.restart(1),
            Away::CutOff => c.heal(1),
        },
        secs(60),
    );
    c.note(format!("{k} edits missed, {sent} entries received on coming back"));
    if sent != k {
        c.fail(&format!("{k} edits missed while {away:?}, but {sent} entries sent on coming back"));
    }
    c.assert_stays_converged(secs(10));
    c
}

#[test]
fn a_node_back_after_missing_k_changes_receives_k_entries() {
    for seed in seeds(FIXED, 14) {
        back_after_k_changes(seed, Away::Stopped);
    }
}

#[test]
fn a_connection_back_after_missing_k_changes_receives_k_entries() {
    for seed in seeds(FIXED, 15) {
        back_after_k_changes(seed, Away::CutOff);
    }
}

/// Node 1's state directory is wiped while it is stopped: a new index, so
/// both sides exchange everything, and nothing is lost or brought back.
fn wiped_state(seed: u64) -> Cluster {
    const FILES: usize = 60;
    let mut c = settled_pair("wiped_state", seed, FILES);
    let mut rng = Rng::new(seed ^ 0xe3);
    for i in 0..FILES {
        let path = format!("d{}/f{i}.txt", i % 7);
        let data = c.read(0, &path).unwrap_or_default();
        c.expect(&path, Expect::File(*blake3::hash(&data).as_bytes()));
    }
    // A deletion before the wipe must stay a deletion.
    c.delete(0, "d0/f0.txt");
    c.expect("d0/f0.txt", Expect::Gone);
    c.converge(secs(30));
    c.stop(1);
    let k = edit_some(&mut c, &mut rng, FILES);
    let state = c.root(1).join(".dirsync");
    std::fs::remove_dir_all(&state).unwrap();
    let sent = entries_on_return(&mut c, |c| c.restart(1), secs(60));
    if sent < FILES as u64 {
        c.fail(&format!(
            "a wiped state directory got {sent} entries, not the whole index ({k} edits missed)"
        ));
    }
    c.assert_stays_converged(secs(10));
    c
}

#[test]
fn a_wiped_state_directory_gets_everything_and_loses_nothing() {
    for seed in seeds(FIXED, 16) {
        wiped_state(seed);
    }
}

/// Node 1 believes it holds k changes of node 0's that it never got (its
/// remembered mark moved past them behind dirsync's back, as a lost
/// message would leave it): the index exchange sends nothing, the digests
/// differ, and the digest descent finds the k files and repairs them.
fn lost_changes_found_by_descent(seed: u64) -> Cluster {
    use dirsync::fs::index_db::PeerMark;
    use dirsync::wire::NodeId;
    const FILES: usize = 120;
    let mut c = settled_pair("lost_changes_found_by_descent", seed, FILES);
    let mut rng = Rng::new(seed ^ 0xe4);
    c.stop(1);
    let k = edit_some(&mut c, &mut rng, FILES);
    c.run_for(secs(2));
    let device_file = c.root(0).join(".dirsync/device");
    let device = std::fs::read_to_string(&device_file).unwrap();
    let device = NodeId(u64::from_str_radix(device.trim(), 16).unwrap());
    {
        let (mut index, _) = dirsync::fs::index_db::open_index(&c.root(1).join(".dirsync/index.redb")).unwrap();
        let mark = index.peer_mark(device).expect("node 1 remembers node 0");
        index.set_peer_mark(device, PeerMark { seq: mark.seq + k, ..mark });
        index.close().unwrap();
    }
    let sent = entries_on_return(&mut c, |c| c.restart(1), secs(120));
    c.note(format!("{k} changes lost, {sent} entries received"));
    if sent >= FILES as u64 {
        c.fail(&format!("{sent} entries received: the whole index, not a descent to {k} changes"));
    }
    c.assert_stays_converged(secs(10));
    c
}

#[test]
fn changes_a_node_believes_it_has_are_found_by_the_digest_descent() {
    for seed in seeds(FIXED, 17) {
        lost_changes_found_by_descent(seed);
    }
}

/// A file rewritten on node 1 while it was stopped, with its size and mtime
/// put back (as some tools and restores do): its change time tells, the
/// restart reads it again, and the new content reaches node 0. (The digest
/// cannot tell: it covers the index, which had not changed.)
fn changed_behind_the_back(seed: u64) -> Cluster {
    const FILES: usize = 40;
    let mut rng = Rng::new(seed);
    let mut opts = Options::new("changed_behind_the_back", 2, seed);
    // Node 1 looks at what it received once, and so knows its change times.
    opts.rescan_interval = secs(5);
    let mut c = Cluster::new(opts);
    for i in 0..FILES {
        let len = 1 + rng.below(2000) as usize;
        let data = rng.bytes(len);
        c.seed_file(0, &format!("d{}/f{i}.txt", i % 7), &data);
    }
    c.start_all();
    c.converge(secs(60));
    c.run_for(secs(8));
    c.stop(1);
    let i = rng.below(FILES as u64) as usize;
    let path = format!("d{}/f{i}.txt", i % 7);
    let full = c.root(1).join(&path);
    let old = std::fs::read(&full).unwrap();
    let mtime = std::fs::metadata(&full).unwrap().modified().unwrap();
    let new: Vec<u8> = old.iter().map(|b| b.wrapping_add(1)).collect();
    std::fs::write(&full, &new).unwrap();
    filetime::set_file_mtime(&full, filetime::FileTime::from_system_time(mtime)).unwrap();
    c.note(format!("{path} rewritten on n1 while stopped, its mtime put back"));
    c.expect(&path, Expect::File(*blake3::hash(&new).as_bytes()));
    c.restart(1);
    c.converge(secs(60));
    c.assert_stays_converged(secs(10));
    c
}

#[test]
fn a_file_changed_while_stopped_with_its_mtime_put_back_is_noticed() {
    for seed in seeds(FIXED, 18) {
        changed_behind_the_back(seed);
    }
}

//! A node that receives many files does not keep them open. (Each received
//! file used to leak its descriptor until the node hit the process limit;
//! found when the seed sweep ran out of descriptors.) Its own test binary,
//! so no other test opens files meanwhile.

use dirsync_sim::{Cluster, Options};
use std::time::Duration;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn received_files_are_closed() {
    let mut c = Cluster::new(Options::new("descriptors", 3, 7));
    c.seed_file(0, "first.txt", b"first");
    c.start_all();
    c.converge(Duration::from_secs(30));
    let before = open_descriptors();
    for i in 0..100 {
        c.write(i % 3, &format!("many/f{i}.txt"), format!("file {i}").as_bytes());
    }
    c.converge(Duration::from_secs(60));
    let after = open_descriptors();
    assert!(
        after < before + 10,
        "{} descriptors more after receiving 200 files ({before} -> {after})",
        after.saturating_sub(before)
    );
}

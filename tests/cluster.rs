//! Three real `dirsync` processes on loopback: distinct listen ports, one
//! shared broadcast port (127.255.255.255 reaches every loopback listener).

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn converge(dirs: &[&Path], what: &str, procs: &[Proc]) -> Duration {
    let (ok, took) = wait_until(TIMEOUT, || all_equal(dirs));
    if !ok {
        let logs: Vec<String> = procs.iter().map(|p| format!("--- {}\n{}", p.log.display(), p.log_text())).collect();
        panic!(
            "{what}: trees differ after {TIMEOUT:?}:\n{}\n{}",
            describe_difference(dirs),
            logs.join("\n")
        );
    }
    println!("{what}: converged in {took:?}");
    took
}

#[test]
fn three_nodes_merge_then_follow_live_changes() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let dirs: Vec<_> = (0..3).map(|i| root.join(format!("node{i}"))).collect();
    for d in &dirs {
        fs::create_dir_all(d).unwrap();
    }
    // Different initial files on each node, nested folders and an empty one.
    write(&dirs[0], "a.txt", b"from node 0");
    write(&dirs[0], "shared/deep/x.bin", &vec![7u8; 200_000]);
    write(&dirs[1], "b.txt", b"from node 1");
    fs::create_dir_all(dirs[1].join("empty/folder")).unwrap();
    write(&dirs[2], "c d/with space.txt", "ünïcödé".as_bytes());

    let bport = free_udp_port();
    let procs: Vec<Proc> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| Proc::start(d, free_tcp_port(), bport, &root.join(format!("node{i}.log"))))
        .collect();
    let paths: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();

    let initial = converge(&paths, "initial sync to the union", &procs);
    let t = tree(&dirs[2]);
    for p in ["a.txt", "b.txt", "shared/deep/x.bin", "empty/folder", "c d/with space.txt"] {
        assert!(t.contains_key(p), "{p} missing from the union: {t:?}");
    }

    // Live changes on node 0: create, modify, rename a file and a folder, delete.
    write(&dirs[0], "new/file.txt", b"created live");
    converge(&paths, "live create", &procs);
    write(&dirs[0], "a.txt", b"modified on node 0");
    converge(&paths, "live modify", &procs);
    let before: Vec<_> = procs.iter().map(Proc::counters).collect();
    fs::rename(dirs[0].join("b.txt"), dirs[0].join("b-renamed.txt")).unwrap();
    fs::rename(dirs[0].join("shared"), dirs[0].join("moved")).unwrap();
    converge(&paths, "live renames", &procs);
    assert!(tree(&dirs[1]).contains_key("moved/deep/x.bin"));
    // The others moved the files locally: renames applied, and the 200 KB
    // file's content not sent again.
    for (p, was) in procs.iter().zip(&before).skip(1) {
        let now = p.counters();
        assert!(
            now.renames_applied > was.renames_applied,
            "no local rename on {}:\n{}",
            p.dir.display(),
            p.log_text()
        );
        let resent = now.content_bytes_received - was.content_bytes_received;
        assert!(
            resent < 200_000,
            "{resent} content bytes sent again to {} for renames",
            p.dir.display()
        );
    }
    fs::remove_file(dirs[0].join("a.txt")).unwrap();
    fs::remove_dir_all(dirs[0].join("empty")).unwrap();
    converge(&paths, "live deletes", &procs);
    let t = tree(&dirs[2]);
    assert!(
        !t.contains_key("a.txt") && !t.contains_key("empty"),
        "deleted paths came back: {t:?}"
    );

    // A change on another node travels too.
    write(&dirs[2], "moved/deep/x.bin", &vec![8u8; 200_000]);
    converge(&paths, "live modify from node 2", &procs);
    println!("three-process initial convergence: {initial:?}");
}

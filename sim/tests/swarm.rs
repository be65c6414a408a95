//! Swarm transfers in a cluster of six: one source, five receivers that
//! fetch a large file in pieces from everyone who holds them. A peer that
//! lies about pieces, a source that leaves halfway, and a partition among
//! the receivers; each at a fixed seed and over a sweep of seeds.
//! (turmoil does not model bandwidth: these prove correctness, `just
//! bench` W6 measures speed.)

use dirsync::wire::pieces::MIN_PIECE_SIZE;
use dirsync_sim::{seeds, Cluster, Expect, Options, Rng};
use std::time::Duration;

const FIXED: u64 = 20_261_202;
const NODES: usize = 6;
const PIECE: usize = MIN_PIECE_SIZE as usize;
const PATH: &str = "media/big.bin";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A file of 24 to 56 pieces (the simulation cuts files in 16 KiB), the
/// last one short, of random bytes (no piece reads as zeros, which is what
/// a temp file holds where no piece was written yet).
fn big_content(rng: &mut Rng) -> Vec<u8> {
    let pieces = 24 + rng.below(33) as usize;
    let short = 1 + rng.below(PIECE as u64 - 1) as usize;
    rng.bytes(pieces * PIECE - short)
}

fn options(name: &str, seed: u64) -> Options {
    let mut opts = Options::new(name, NODES, seed);
    opts.max_latency = Duration::from_millis(1 + Rng::new(seed).below(30));
    opts
}

/// Pieces of `content` some receiver holds now: whole, or in a temp file.
fn held_pieces(c: &mut Cluster, content: &[u8], receivers: &[usize]) -> Vec<bool> {
    let mut held = vec![false; content.len().div_ceil(PIECE)];
    for &r in receivers {
        let mut files: Vec<Vec<u8>> = c.read(r, PATH).into_iter().collect();
        for t in c.temp_files(r) {
            if let Ok(bytes) = std::fs::read(c.root(r).join(&t)) {
                files.push(bytes);
            }
        }
        for f in files.iter().filter(|f| f.len() == content.len()) {
            for (i, piece) in content.chunks(PIECE).enumerate() {
                held[i] |= &f[i * PIECE..i * PIECE + piece.len()] == piece;
            }
        }
    }
    held
}

fn everyone_holds(c: &Cluster, hosts: &[usize], content: &[u8]) -> bool {
    hosts.iter().all(|h| c.read(*h, PATH).as_deref() == Some(content))
}

/// Receivers fetch from the source and from each other: between them
/// they receive more pieces than the file has, and the source sends
/// fewer than the file's pieces times the receivers.
fn spread_out(c: &Cluster, pieces: u64) {
    let from_source = c.counters(0).values().pieces_sent;
    let received: u64 = (1..NODES).map(|h| c.counters(h).values().pieces_received).sum();
    if received < pieces * (NODES as u64 - 1) {
        c.fail(&format!("{received} pieces received for {pieces} pieces to 5 receivers"));
    }
    if from_source >= received {
        c.fail(&format!(
            "the source sent {from_source} of the {received} pieces: the receivers passed none on"
        ));
    }
}

/// n1 holds the file as the source does, but flips a byte of every piece
/// it sends. Each receiver refuses its pieces, fetches them elsewhere, and
/// after three bad ones disconnects it and never asks it again.
fn liar(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut opts = options("swarm_liar", seed);
    opts.liars = vec![1];
    let mut c = Cluster::new(opts);
    let content = big_content(&mut rng);
    c.start(0);
    c.start(1);
    c.run_for(secs(3));
    c.write(0, PATH, &content);
    c.expect(PATH, Expect::File(*blake3::hash(&content).as_bytes()));
    // The liar takes the file from the source (who tells no lies).
    if !c.run_until(secs(60), |c| everyone_holds(c, &[1], &content)) {
        c.fail("the liar never got the file");
    }
    for h in 2..NODES {
        c.start(h);
    }
    c.converge(secs(120));
    let bad: Vec<u64> = (2..NODES).map(|h| c.counters(h).values().bad_pieces).collect();
    if bad.iter().sum::<u64>() == 0 {
        c.fail("no receiver refused a piece of the liar");
    }
    // Disconnected after three, with at most one more already on its way.
    if let Some(b) = bad.iter().find(|b| **b > 4) {
        c.fail(&format!("a receiver took {b} bad pieces from the liar"));
    }
    c
}

/// The source leaves (a crash) once the receivers together hold every
/// piece but none holds the file whole: they finish it among themselves.
fn source_leaves(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut c = Cluster::new(options("swarm_source_leaves", seed));
    let content = big_content(&mut rng);
    c.start_all();
    c.run_for(secs(3));
    c.write(0, PATH, &content);
    c.expect(PATH, Expect::File(*blake3::hash(&content).as_bytes()));
    let receivers: Vec<usize> = (1..NODES).collect();
    let covered = c.run_until(secs(60), |c| {
        everyone_holds(c, &receivers, &content) || held_pieces(c, &content, &receivers).iter().all(|h| *h)
    });
    if !covered {
        c.fail("the receivers never held every piece between them");
    }
    let whole = receivers
        .iter()
        .filter(|r| c.read(**r, PATH).as_deref() == Some(&content[..]))
        .count();
    c.note(format!("every piece held; {whole} receivers hold the whole file"));
    c.crash(0);
    if !c.run_until(secs(90), |c| everyone_holds(c, &receivers, &content)) {
        c.fail("the receivers did not finish the file among themselves");
    }
    c.restart(0);
    c.converge(secs(120));
    c
}

/// The receivers split in two groups mid-transfer, the source on one side;
/// once they meet again every node holds the file.
fn receivers_split(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut c = Cluster::new(options("swarm_receivers_split", seed));
    let content = big_content(&mut rng);
    let pieces = content.len().div_ceil(PIECE) as u64;
    c.start_all();
    c.run_for(secs(3));
    c.write(0, PATH, &content);
    c.expect(PATH, Expect::File(*blake3::hash(&content).as_bytes()));
    let after = 1 + rng.below(pieces);
    c.run_until(secs(30), |c| {
        (1..NODES).map(|h| c.counters(h).values().pieces_received).sum::<u64>() >= after
    });
    let side = [3, 4, 5];
    c.split(&side);
    c.run_for(secs(5 + rng.below(30)));
    c.rejoin(&side);
    c.converge(secs(180));
    spread_out(&c, pieces);
    c
}

/// Five receivers of one new file: everyone passes pieces on.
fn one_to_five(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut c = Cluster::new(options("swarm_one_to_five", seed));
    let content = big_content(&mut rng);
    c.start_all();
    c.run_for(secs(3));
    c.write(0, PATH, &content);
    c.expect(PATH, Expect::File(*blake3::hash(&content).as_bytes()));
    c.converge(secs(60));
    spread_out(&c, content.len().div_ceil(PIECE) as u64);
    c
}

#[test]
fn a_lying_peer_is_found_out_and_the_file_arrives_intact() {
    for seed in seeds(FIXED, 61) {
        liar(seed);
    }
}

#[test]
fn partial_holders_finish_a_file_whose_source_left() {
    for seed in seeds(FIXED, 62) {
        source_leaves(seed);
    }
}

#[test]
fn a_partition_among_receivers_mid_transfer_heals() {
    for seed in seeds(FIXED, 63) {
        receivers_split(seed);
    }
}

#[test]
fn receivers_pass_pieces_on_to_each_other() {
    for seed in seeds(FIXED, 64) {
        one_to_five(seed);
    }
}

/// A hundred small files at once to five receivers: each is asked of the
/// source by one receiver first, the others take it from whoever has it
/// by then, so the source sends far fewer than five copies (it sent two
/// and a half with the shared window alone, four in W6 before it).
fn small_files_to_five(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut c = Cluster::new(options("swarm_small_files_to_five", seed));
    c.start_all();
    c.run_for(secs(3));
    const FILES: u64 = 100;
    for i in 0..FILES {
        let len = 512 + rng.below(3000) as usize;
        let content = rng.bytes(len);
        let path = format!("small/d{}/f{i:03}", i % 5);
        c.write(0, &path, &content);
        c.expect(&path, Expect::File(*blake3::hash(&content).as_bytes()));
    }
    c.converge(secs(60));
    let from_source = c.counters(0).values().files_sent;
    let received: u64 = (1..NODES).map(|h| c.counters(h).values().files_received).sum();
    if received < FILES * (NODES as u64 - 1) {
        c.fail(&format!("{received} files received for {FILES} files to 5 receivers"));
    }
    if from_source > 2 * FILES {
        c.fail(&format!("the source sent {from_source} files for {FILES}: over twice the content"));
    }
    c
}

#[test]
fn receivers_pass_small_files_on_to_each_other() {
    for seed in seeds(FIXED, 65) {
        small_files_to_five(seed);
    }
}

//! A hostile host fuzzes a simulated node's connection handling: many
//! connections, each a hello and then valid messages with random fields
//! and random bit flips. Deterministic per seed (fixed seed plus a sweep of
//! 2; `SIM_SEEDS=N` for more). `DIRSYNC_FUZZ_CONNECTIONS` (default 40) sets
//! the connections per seed for long runs (`just fuzz`).
//!
//! The node must never panic (a panic in any node task fails the run), must
//! close what is malformed (counted as a protocol error), and the honest
//! cluster must still converge afterwards.

use dirsync::wire::{self, ContentMode, Entry, Hash, Kind, Message, NodeId, RelPath, WantFile, PROTOCOL_VERSION};
use dirsync_sim::cluster::LISTEN_PORT;
use dirsync_sim::{sweep_seeds, Cluster, Expect, Options, Rng};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FIXED: u64 = 20_260_707;

fn seeds() -> Vec<u64> {
    if std::env::var_os("SIM_SEED").is_some() {
        return sweep_seeds(21, 2);
    }
    std::iter::once(FIXED).chain(sweep_seeds(21, 2)).collect()
}

fn random_message(rng: &mut Rng) -> Message {
    let paths = ["a", "a/b", "seed.txt", "x.bin", "d/e"];
    let path = RelPath::new(*rng.pick(&paths)).expect("valid");
    let hash = Hash(rng.bytes(32).try_into().expect("32 bytes"));
    let entry = Entry {
        path: path.clone(),
        kind: if rng.chance(25) { Kind::Dir } else { Kind::File },
        deleted: rng.chance(20),
        size: if rng.chance(30) { rng.next_u64() } else { rng.below(200_000) },
        mtime: rng.next_u64() as i64 as i128,
        version: rng.next_u64() as i64 as i128,
        hash,
        vector: Default::default(),
        by: Default::default(),
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    };
    let junk_len = rng.below(300) as usize;
    let junk = rng.bytes(junk_len);
    match rng.below(11) {
        0 => Message::Index {
            entries: vec![entry],
            done: rng.chance(50),
        },
        1 => Message::Update { entries: vec![entry] },
        2 => Message::Want {
            files: vec![WantFile { path, hash: hash.into() }],
        },
        3 => Message::WantDelta {
            path,
            hash,
            base: hash,
            signature: junk,
        },
        4 => Message::FileStart {
            entry,
            content: if rng.chance(50) {
                ContentMode::Full
            } else {
                ContentMode::Delta { base: hash }
            },
        },
        5 => Message::Chunk { data: junk },
        6 => Message::FileEnd,
        7 => Message::Unavailable { path },
        8 => Message::Ping,
        9 => Message::Hello {
            version: PROTOCOL_VERSION,
            node: NodeId(rng.next_u64()),
            listen_port: 1,
            device: NodeId(rng.next_u64()),
            features: vec![],
            newest: 0,
        },
        _ => Message::Refuse { reason: "no".into() },
    }
}

fn fuzz_node(seed: u64, connections: u64) -> u64 {
    let mut c = Cluster::new(Options::new("hostile_fuzz", 2, seed));
    c.seed_file(0, "seed.txt", b"honest");
    // Without a cluster key the hostile host is a peer like any other: its
    // well-formed messages may delete or replace seed.txt (a long run found
    // exactly that). Only agreement is checked for it.
    c.expect("seed.txt", Expect::Unknown);
    let frames = Rc::new(Cell::new(0u64));
    let sent = frames.clone();
    c.add_host("hostile", move || {
        let sent = sent.clone();
        async move {
            let mut rng = Rng::new(seed ^ 0xbad);
            for conn in 0..connections {
                let Ok(mut s) = turmoil::net::TcpStream::connect(("n0", LISTEN_PORT)).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                // Skip the node's hello (its length prefix, then its body).
                let mut prefix = [0u8; 8];
                if s.read_exact(&mut prefix).await.is_err() {
                    continue;
                }
                let mut body = vec![0u8; wire::body_len(prefix).unwrap_or(0)];
                let _ = s.read_exact(&mut body).await;
                let hello = Message::Hello {
                    version: PROTOCOL_VERSION,
                    node: NodeId(0xf000 + conn),
                    listen_port: 1,
                    device: NodeId(0xf000 + conn),
                    features: vec![],
                    newest: 0,
                };
                let _ = s.write_all(&wire::encode(&hello)).await;
                for _ in 0..1 + rng.below(12) {
                    let mut frame = wire::encode(&random_message(&mut rng));
                    for _ in 0..rng.below(3) {
                        let i = rng.below(frame.len() as u64) as usize;
                        frame[i] ^= 1 << rng.below(8);
                    }
                    sent.set(sent.get() + 1);
                    if s.write_all(&frame).await.is_err() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50 + rng.below(300))).await;
            }
            // Stay up, silent, so the cluster can settle.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    });
    c.start_all();
    c.run_for(Duration::from_secs(connections / 2 + 20));
    c.write(1, "after.txt", b"still syncing");
    c.expect("after.txt", Expect::File(*blake3::hash(b"still syncing").as_bytes()));
    c.converge(Duration::from_secs(60));
    let closed = c.counters(0).values().protocol_errors;
    assert!(closed > 0, "seed {seed}: no hostile connection was closed as a protocol error");
    frames.get()
}

#[test]
fn mutated_messages_never_break_a_node() {
    let connections = std::env::var("DIRSYNC_FUZZ_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut total = 0;
    for seed in seeds() {
        total += fuzz_node(seed, connections);
    }
    println!("hostile frames sent to simulated nodes: {total}");
}

//! Clusters with cluster keys on, at a fixed seed and a small sweep
//! (4 seeds by default; `SIM_SEEDS=N` for more, `SIM_SEED=S` for one):
//!
//! 1. every node keyed alike: the encrypted cluster discovers, merges and
//!    follows live changes like an open one;
//! 2. two keys and an open node on one network: only the nodes sharing a
//!    key sync, the others keep exactly their own files and say why;
//! 3. an impostor replays the cluster's key fingerprint in its
//!    announcements: the keyed nodes dial it, refuse it at the key
//!    handshake, and it learns nothing of the directory;
//!
//! and a keyed run replays exactly from its seed.

use dirsync::node::CounterValues;
use dirsync::transport::key::ClusterKey;
use dirsync::wire::{self, Announce, Message, NodeId, PROTOCOL_VERSION};
use dirsync_sim::{sweep_seeds, Cluster, Expect, Options, Rng};
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FIXED: u64 = 20_260_606;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn seeds(salt: u64) -> Vec<u64> {
    if std::env::var_os("SIM_SEED").is_some() {
        return sweep_seeds(salt, 4);
    }
    std::iter::once(FIXED).chain(sweep_seeds(salt, 4)).collect()
}

fn key(rng: &mut Rng) -> ClusterKey {
    let mut k = [0u8; 32];
    k.copy_from_slice(&rng.bytes(32));
    ClusterKey::from_bytes(k)
}

fn hash(content: &[u8]) -> [u8; 32] {
    *blake3::hash(content).as_bytes()
}

/// Log lines containing `needle`: only for what the log itself is for
/// (startup notices, the warning that says why a node does not connect).
fn count(c: &Cluster, needle: &str) -> usize {
    c.sanitized_log().iter().filter(|l| l.contains(needle)).count()
}

/// `counter` summed over every host.
fn total(c: &Cluster, counter: impl Fn(&CounterValues) -> u64) -> u64 {
    (0..c.len()).map(|i| counter(&c.counters(i).values())).sum()
}

// ----- 1. one key everywhere -----------------------------------------------

fn keyed_cluster(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(2) as usize;
    let k = key(&mut rng);
    let mut opts = Options::new("keyed_cluster", n, seed);
    opts.keys = vec![Some(k); n];
    let mut c = Cluster::new(opts);
    for i in 0..n {
        let len = rng.below(100_000) as usize;
        let data = rng.bytes(len);
        c.seed_file(i, &format!("n{i}/file.bin"), &data);
        c.expect(&format!("n{i}/file.bin"), Expect::File(hash(&data)));
    }
    c.start_all();
    c.converge(secs(60));
    // Live changes, including a delta on a file of more than 64 KiB.
    let big = rng.bytes(200_000);
    c.write(0, "big.bin", &big);
    c.converge(secs(60));
    let mut edited = big.clone();
    edited[1000..1100].copy_from_slice(&rng.bytes(100));
    c.write(1 + rng.below(n as u64 - 1) as usize, "big.bin", &edited);
    c.expect("big.bin", Expect::File(hash(&edited)));
    c.rename(0, "n0/file.bin", "n0/renamed.bin");
    c.delete(n - 1, &format!("n{}/file.bin", n - 1));
    c.converge(secs(60));
    c.assert_stays_converged(secs(25));
    assert_eq!(count(&c, "cluster key on"), n, "seed {seed}: every node runs keyed");
    let refused = total(&c, |v| v.handshakes_refused);
    assert_eq!(refused, 0, "seed {seed}: a node refused its own cluster");
    assert!(total(&c, |v| v.deltas_received) > 0, "seed {seed}: no delta travelled encrypted");
    c
}

#[test]
fn a_keyed_cluster_syncs_like_an_open_one() {
    for seed in seeds(11) {
        keyed_cluster(seed);
    }
}

/// Encryption draws fresh ephemeral keys from the OS on every run, but only
/// the bytes differ: the run (trace, trees, times) replays exactly.
#[test]
fn a_keyed_seed_replays_exactly() {
    let (a, b) = (keyed_cluster(FIXED).digest(), keyed_cluster(FIXED).digest());
    assert_eq!(a, b, "seed {FIXED} did not replay with keys on");
    assert_ne!(a, keyed_cluster(FIXED + 1).digest(), "two seeds gave the same trace");
}

// ----- 2. two keys and an open node --------------------------------------

fn split_keys(seed: u64) {
    let mut rng = Rng::new(seed);
    let (k1, k2) = (key(&mut rng), key(&mut rng));
    let mut opts = Options::new("split_keys", 5, seed);
    // Hosts 0–2 share k1, host 3 has k2, host 4 runs open.
    opts.keys = vec![Some(k1.clone()), Some(k1.clone()), Some(k1), Some(k2), None];
    let mut c = Cluster::new(opts);
    for i in 0..5 {
        c.seed_file(i, &format!("only-{i}.txt"), format!("host {i}").as_bytes());
    }
    c.start_all();
    let keyed = [0usize, 1, 2];
    let agreed = c.run_until(secs(60), |c| {
        let t0 = c.tree(0);
        t0.len() == 3 && keyed.iter().all(|&i| c.tree(i) == t0)
    });
    assert!(agreed, "seed {seed}: the k1 nodes did not sync with each other");
    let writer = rng.below(3) as usize;
    c.write(writer, "live.txt", b"k1 only");
    let agreed = c.run_until(secs(60), |c| keyed.iter().all(|&i| c.read(i, "live.txt").is_some()));
    assert!(agreed, "seed {seed}: a live change did not reach every k1 node");
    c.run_for(secs(20));
    for i in 0..3 {
        let t = c.tree(i);
        let names: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["live.txt", "only-0.txt", "only-1.txt", "only-2.txt"],
            "seed {seed}: host {i}"
        );
    }
    for i in 3..5 {
        let t = c.tree(i);
        let names: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [format!("only-{i}.txt").as_str()],
            "seed {seed}: host {i} got another cluster's files"
        );
    }
    // Every node heard the ones outside its cluster and said why it does
    // not connect: k1 nodes 2 each, host 3 and 4 four each.
    let why = count(&c, "not connecting");
    assert_eq!(why, 3 * 2 + 4 + 4, "seed {seed}: 'not connecting' lines");
    // Nobody connected across clusters: hosts 3 and 4 have no connection,
    // and the k1 nodes learnt only each other.
    for i in 0..5 {
        let v = c.counters(i).values();
        assert_eq!(v.handshakes_refused, 0, "seed {seed}: host {i} never dials another cluster");
        if i >= 3 {
            assert_eq!((v.connections, v.discovered), (0, 0), "seed {seed}: host {i}");
        } else {
            assert_eq!(v.discovered, 2, "seed {seed}: host {i} learns the other k1 nodes");
        }
    }
    assert_eq!(count(&c, "any host on the network can read and change"), 1, "seed {seed}");
}

#[test]
fn different_keys_never_sync() {
    for seed in seeds(12) {
        split_keys(seed);
    }
}

// ----- 3. an impostor with a replayed fingerprint --------------------------

/// What the impostor saw: connections, and every byte it was sent.
#[derive(Default)]
struct Seen {
    connections: usize,
    bytes: Vec<u8>,
}

fn impostor(seed: u64) {
    let mut rng = Rng::new(seed);
    let k = key(&mut rng);
    let fingerprint = k.fingerprint();
    let mut opts = Options::new("impostor", 2, seed);
    opts.keys = vec![Some(k); 2];
    let mut c = Cluster::new(opts);
    let secret = b"the directory's secret".to_vec();
    c.seed_file(0, "secret.txt", &secret);
    c.expect("secret.txt", Expect::File(hash(&secret)));
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    // The largest id, so every keyed node dials it.
    c.add_host("impostor", move || {
        let fingerprint = fingerprint.clone();
        let seen = s.clone();
        async move {
            let udp = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, dirsync_sim::cluster::BROADCAST_PORT)).await?;
            udp.set_broadcast(true)?;
            let listener = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, dirsync_sim::cluster::LISTEN_PORT)).await?;
            let me = NodeId(u64::MAX);
            let announce = Announce::new(me, dirsync_sim::cluster::LISTEN_PORT).with_key(Some(fingerprint));
            let to: SocketAddr = (Ipv4Addr::BROADCAST, dirsync_sim::cluster::BROADCAST_PORT).into();
            let accept = async {
                loop {
                    let (mut sock, _) = listener.accept().await?;
                    seen.borrow_mut().connections += 1;
                    let hello = Message::Hello {
                        version: PROTOCOL_VERSION,
                        node: me,
                        listen_port: dirsync_sim::cluster::LISTEN_PORT,
                        device: me,
                        features: vec![],
                        newest: 0,
                    };
                    let _ = sock.write_all(&wire::encode(&hello)).await;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.borrow_mut().bytes.extend_from_slice(&buf[..n]);
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), std::io::Error>(())
            };
            let shout = async {
                loop {
                    udp.send_to(&announce.encode(), to).await?;
                    tokio::time::sleep(secs(1)).await;
                }
                #[allow(unreachable_code)]
                Ok::<(), std::io::Error>(())
            };
            futures_lite::future::or(accept, shout).await?;
            Ok(())
        }
    });
    c.start_all();
    c.converge(secs(60));
    c.run_for(secs(10));
    let seen = seen.borrow();
    assert!(seen.connections >= 2, "seed {seed}: the keyed nodes never dialled the impostor");
    // After a refusal each node waits 30 s before dialling it again, though
    // it announces every second.
    let rounds = c.elapsed().as_secs() as usize / 30 + 1;
    assert!(
        seen.connections <= 2 * rounds,
        "seed {seed}: {} dials of the impostor in {:?}",
        seen.connections,
        c.elapsed()
    );
    assert!(
        !seen.bytes.windows(secret.len()).any(|w| w == secret.as_slice()) && !seen.bytes.windows(10).any(|w| w == b"secret.txt"),
        "seed {seed}: the impostor read the directory"
    );
    for i in 0..2 {
        let refused = c.counters(i).values().handshakes_refused;
        assert!(refused >= 1, "seed {seed}: host {i} did not refuse the impostor");
    }
    assert!(c.tree(0).contains_key("secret.txt") && c.tree(1).contains_key("secret.txt"));
}

#[test]
fn an_impostor_replaying_the_fingerprint_is_refused() {
    for seed in seeds(13) {
        impostor(seed);
    }
}

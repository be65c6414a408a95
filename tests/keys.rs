//! The cluster key with real processes on loopback: `dirsync keygen`, nodes
//! with the same key sync, nodes with different keys (or none) sync nothing
//! in either direction and say why, and a connection without the right key
//! is refused before any file data flows.

mod common;

use common::*;
use dirsync::transport::conn::{handshake, read_frame};
use dirsync::transport::key::ClusterKey;
use dirsync::transport::net::{AsyncStdNet, Net};
use dirsync::transport::secure::{establish, SecureError};
use dirsync::wire::{self, Message, NodeId};
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn keygen(path: &Path) -> std::process::Output {
    Command::new(BIN).arg("keygen").arg(path).stdin(Stdio::null()).output().unwrap()
}

fn addr(p: &Proc) -> SocketAddr {
    ([127, 0, 0, 1], p.listen_port).into()
}

/// Dial `p` with `key` as a keyed node would; `Ok` with the node's hello.
fn dial_with(p: &Proc, key: &ClusterKey) -> Result<Message, String> {
    AsyncStdNet::block_on(async {
        let conn = AsyncStdNet.connect(addr(p)).await.map_err(|e| e.to_string())?;
        let mut link = establish::<AsyncStdNet>(conn, Some(key), true).await.map_err(|e| e.to_string())?;
        let hello = handshake(&AsyncStdNet, &mut link, NodeId(0x7e57), NodeId(0x7e57), 1)
            .await
            .map_err(|e| e.to_string())?;
        let _ = hello;
        // The node's index request follows the hello on an accepted connection.
        read_frame(&mut link.reader).await.map(|(m, _)| m).map_err(|e| e.to_string())
    })
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("cluster.key");
    let out = keygen(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fingerprint"));
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let again = keygen(&path);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(fs::read_to_string(&path).unwrap(), text, "keygen overwrote a key");
    let missing = Command::new(BIN).arg("keygen").stderr(Stdio::piped()).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));

    // A bad or missing key file stops the node at once, with one line.
    let dir = scratch.path().join("d");
    fs::create_dir(&dir).unwrap();
    let bad = scratch.path().join("bad.key");
    fs::write(&bad, "not a key\n").unwrap();
    // A folder named as the key file says so (issue 13: it said "expected
    // 64 hex digits").
    let folder = scratch.path().join("keys");
    fs::create_dir(&folder).unwrap();
    for (file, needle) in [
        (bad.as_path(), "64 hex digits"),
        (&scratch.path().join("nope"), "No such file"),
        (folder.as_path(), "is a folder"),
    ] {
        let out = Command::new(BIN)
            .arg(&dir)
            .arg("--key-file")
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

#[test]
fn nodes_with_the_same_key_sync_and_others_are_refused_before_any_data() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let key_file = root.join("k");
    assert!(keygen(&key_file).status.success());
    let key = ClusterKey::load(&key_file).unwrap();
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    write(&a_dir, "from-a.txt", b"secret of a");
    write(&b_dir, "sub/from-b.bin", &vec![9u8; 300_000]);
    let bport = free_udp_port();
    let kf = key_file.to_str().unwrap();
    let a = Proc::start_with(&a_dir, free_tcp_port(), bport, &root.join("a.log"), &["--key-file", kf], &[]);
    // The other through the environment variable.
    let b = Proc::start_with(
        &b_dir,
        free_tcp_port(),
        bport,
        &root.join("b.log"),
        &[],
        &[("DIRSYNC_KEY_FILE", kf)],
    );
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a_dir, &b_dir]));
    assert!(
        ok,
        "keyed nodes did not sync:\n{}\n{}\n{}",
        describe_difference(&[&a_dir, &b_dir]),
        a.log_text(),
        b.log_text()
    );
    write(&b_dir, "live.txt", b"a live change");
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a_dir, &b_dir]));
    assert!(ok, "a live change did not sync");
    // The startup notice says the key is on, and the open-node warning
    // (whose text `different_keys_sync_nothing_in_either_direction` pins)
    // is not given.
    for p in [&a, &b] {
        let log = p.log_text();
        assert!(log.contains("cluster key on"), "{log}");
        assert!(!log.contains("any host on the network"), "{log}");
    }

    // Our own keyed client gets in (so the refusals below mean something)...
    match dial_with(&a, &key) {
        Ok(Message::IndexRequest { .. }) => {}
        other => panic!("a client with the key was not served: {other:?}"),
    }
    // ...one with another key is refused by the node, which says why.
    let wrong = ClusterKey::from_bytes([0x42; 32]);
    let refused_before = a.counters().handshakes_refused;
    let err = dial_with(&a, &wrong).unwrap_err();
    assert_eq!(err, SecureError::RefusedByPeer.to_string());
    let (counted, _) = a.wait_counters(TIMEOUT, |c| c.handshakes_refused > refused_before);
    assert!(counted, "the node did not count the refusal:\n{}", a.log_text());

    // A plain client saying hello gets a refusal and nothing else: no index,
    // no file data.
    let mut s = TcpStream::connect(addr(&a)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let hello = Message::Hello {
        version: wire::PROTOCOL_VERSION,
        node: NodeId(0x7e58),
        listen_port: 1,
        device: NodeId(0x7e58),
        features: vec![],
        newest: 0,
    };
    std::io::Write::write_all(&mut s, &wire::encode(&hello)).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let (first, used) = wire::decode(&got).unwrap().expect("a whole frame");
    assert!(
        matches!(&first, Message::Refuse { reason } if reason.contains("cluster key")),
        "{first:?}"
    );
    assert_eq!(used, got.len(), "more than the refusal was sent to a client without the key");
    assert!(!got.windows(11).any(|w| w == b"secret of a"));

    // A client that connects and says nothing is dropped during the key
    // handshake too (it is under the same 5-second limit).
    let mut silent = TcpStream::connect(addr(&a)).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let r = silent.read_to_end(&mut buf);
    assert!(
        r.is_ok() || r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a silent client was not dropped: {r:?}"
    );
    assert!(buf.is_empty(), "a keyed listener spoke first: {} bytes", buf.len());

    // Junk at the key handshake: garbage, a huge length, the magic and then
    // garbage, a truncated first message, a record-sized lie.
    let mut junk: Vec<Vec<u8>> = vec![
        (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect(),
        (1u64 << 62).to_be_bytes().to_vec(),
        [&b"dsynckey"[..], &[0, 48], &[7; 48]].concat(),
        [&b"dsynckey"[..], &[0, 48], &[7; 10]].concat(),
        [&b"dsynckey"[..], &[0xff, 0xff], &[1; 300]].concat(),
    ];
    junk.push(b"dsynckey".to_vec());
    for bytes in &junk {
        let mut s = TcpStream::connect(addr(&a)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = std::io::Write::write_all(&mut s, bytes);
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        assert!(
            r.is_ok() || r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "junk left open: {r:?}"
        );
        assert!(got.len() <= 64, "{} bytes answered to junk", got.len());
    }
    let mut a = a;
    assert!(a.alive(), "{}", a.log_text());
    write(&a_dir, "after-junk.txt", b"still here");
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a_dir, &b_dir]));
    assert!(ok, "no sync after junk at the key handshake:\n{}", a.log_text());
}

#[test]
fn different_keys_sync_nothing_in_either_direction() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (k1, k2) = (root.join("k1"), root.join("k2"));
    assert!(keygen(&k1).status.success() && keygen(&k2).status.success());
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| root.join(n)).collect();
    for (d, n) in dirs.iter().zip(["a", "b", "c"]) {
        write(d, &format!("only-{n}.txt"), n.as_bytes());
    }
    let bport = free_udp_port();
    let start = |i: usize, args: &[&str]| Proc::start_with(&dirs[i], free_tcp_port(), bport, &root.join(format!("{i}.log")), args, &[]);
    let a = start(0, &["--key-file", k1.to_str().unwrap()]);
    let b = start(1, &["--key-file", k2.to_str().unwrap()]);
    let c = start(2, &[]);
    // Each hears both others and takes neither up.
    for p in [&a, &b, &c] {
        let (heard, counters) = p.wait_counters(TIMEOUT, |c| c.foreign_nodes >= 2);
        assert!(heard, "{counters:?}\n{}", p.log_text());
    }
    // The operator is told why (that warning is the feature).
    assert!(a.log_text().contains("not connecting"), "{}", a.log_text());
    assert!(c.log_text().contains("any host on the network can read and change"));
    // A connection with the other key is refused by each keyed node.
    for (p, other) in [(&a, &k2), (&b, &k1)] {
        let key = ClusterKey::load(other).unwrap();
        let refused_before = p.counters().handshakes_refused;
        assert!(dial_with(p, &key).is_err());
        let (counted, _) = p.wait_counters(TIMEOUT, |c| c.handshakes_refused > refused_before);
        assert!(counted, "the node did not count the refusal:\n{}", p.log_text());
    }
    // Several announcement rounds later (each node heard four more),
    // nothing has moved anywhere.
    for p in [&a, &b, &c] {
        let before = p.counters().foreign_announcements;
        let (heard, counters) = p.wait_counters(TIMEOUT, |c| c.foreign_announcements >= before + 4);
        assert!(heard, "{counters:?}\n{}", p.log_text());
    }
    for (d, n) in dirs.iter().zip(["a", "b", "c"]) {
        let t = tree(d);
        let names: Vec<&String> = t.keys().collect();
        assert_eq!(names, vec![&format!("only-{n}.txt")], "{n} got files from another cluster");
    }
    // No connection was ever registered, and no node was learnt: the others'
    // announcements are not taken up.
    for p in [&a, &b, &c] {
        let counters = p.counters();
        assert_eq!(counters.connections, 0, "{counters:?}\n{}", p.log_text());
        assert_eq!(counters.discovered, 0, "{counters:?}\n{}", p.log_text());
    }
}

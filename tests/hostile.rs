//! A hostile client against a real node on loopback: garbage, lying
//! lengths, a zlib bomb, escaping paths, a symlink trap, mutated frames, a
//! stalled handshake, a connection flood and junk datagrams. After each the
//! node still runs, nothing exists outside its directory, and two honest
//! nodes still sync.

mod common;

use common::*;
use dirsync::wire::{self, ContentMode, Entry, Hash, Kind, Message, NodeId, RelPath, WantFile};
use flate2::{write::ZlibEncoder, Compression};
use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A victim node `a` and an honest node `b`, synced, in a scratch folder
/// that also holds `outside/`, which must stay empty.
struct Rig {
    _scratch: tempfile::TempDir,
    root: PathBuf,
    a: Proc,
    b: Proc,
    bport: u16,
    checks: u32,
}

impl Rig {
    fn new(prepare_a: impl FnOnce(&Path, &Path)) -> Rig {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().canonicalize().unwrap();
        for d in ["a", "b", "outside"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        prepare_a(&root.join("a"), &root.join("outside"));
        write(&root.join("b"), "seed.txt", b"from b");
        let bport = free_udp_port();
        let a = Proc::start(&root.join("a"), free_tcp_port(), bport, &root.join("a.log"));
        let b = Proc::start(&root.join("b"), free_tcp_port(), bport, &root.join("b.log"));
        let mut rig = Rig {
            _scratch: scratch,
            root,
            a,
            b,
            bport,
            checks: 0,
        };
        rig.check("start");
        rig
    }

    fn dir(&self, p: &Proc) -> PathBuf {
        p.dir.clone()
    }

    fn logs(&self) -> String {
        format!("--- a\n{}\n--- b\n{}", self.a.log_text(), self.b.log_text())
    }

    /// The node runs, nothing is outside the two directories, and a new
    /// file on each honest node reaches the other.
    fn check(&mut self, after: &str) {
        self.checks += 1;
        assert!(self.a.alive(), "node a died after {after}:\n{}", self.logs());
        assert!(self.b.alive(), "node b died after {after}:\n{}", self.logs());
        let outside: Vec<_> = fs::read_dir(self.root.join("outside")).unwrap().collect();
        assert!(outside.is_empty(), "files outside DIR after {after}: {outside:?}");
        let top: BTreeSet<String> = fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        let allowed: BTreeSet<String> = ["a", "b", "c", "outside", "a.log", "b.log", "c.log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(top.is_subset(&allowed), "unexpected entries next to DIR after {after}: {top:?}");
        for (from, to) in [(self.dir(&self.b), self.dir(&self.a)), (self.dir(&self.a), self.dir(&self.b))] {
            let name = format!("check-{}-{}.txt", self.checks, from.file_name().unwrap().to_string_lossy());
            let content = format!("written after {after}");
            write(&from, &name, content.as_bytes());
            let (ok, _) = wait_until(TIMEOUT, || fs::read(to.join(&name)).is_ok_and(|c| c == content.as_bytes()));
            assert!(ok, "{name} did not sync after {after}:\n{}", self.logs());
        }
    }
}

fn connect(p: &Proc) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", p.listen_port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Read one frame (blocking).
fn read_msg(s: &mut TcpStream) -> Option<Message> {
    let mut prefix = [0u8; 8];
    s.read_exact(&mut prefix).ok()?;
    let len = wire::body_len(prefix).ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    wire::decode_body(body).ok()
}

/// Wait until the node closes `s`; false if it is still open after TIMEOUT.
fn closed_by_node(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// Connect and exchange hellos as node `id`.
fn peer(p: &Proc, id: u64) -> TcpStream {
    let mut s = connect(p);
    match read_msg(&mut s) {
        Some(Message::Hello { .. }) => {}
        other => panic!("expected the node's hello, got {other:?}"),
    }
    let hello = Message::Hello {
        version: wire::PROTOCOL_VERSION,
        node: NodeId(id),
        listen_port: 1,
        device: NodeId(id),
        features: vec![],
        newest: 0,
    };
    s.write_all(&wire::encode(&hello)).unwrap();
    s
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// A frame whose JSON is `json`, exactly as given (no validation).
fn raw_frame(json: &str) -> Vec<u8> {
    frame_with_zlib(&zlib(json.as_bytes()))
}

fn frame_with_zlib(z: &[u8]) -> Vec<u8> {
    let mut out = ((4 + z.len()) as u64).to_be_bytes().to_vec();
    out.extend_from_slice(&(z.len() as u32).to_be_bytes());
    out.extend_from_slice(z);
    out
}

fn entry_json(path: &str, kind: &str, size: u64, hash: &Hash) -> String {
    format!(
        r#"{{"path":{},"kind":"{kind}","size":{size},"mtime":1764000000000000000,"version":4000000000000000000,"hash":"{hash}"}}"#,
        serde_json::to_string(path).unwrap()
    )
}

/// Wait until node `a` has counted `n` protocol errors (connections closed
/// for a malformed frame or a protocol violation) more than `before`, and
/// check it counted exactly that many.
fn assert_protocol_errors(rig: &Rig, before: u64, n: u64, what: &str) {
    let (ok, c) = rig.a.wait_counters(TIMEOUT, |c| c.protocol_errors >= before + n);
    let counted = c.protocol_errors.saturating_sub(before);
    assert!(
        ok && counted == n,
        "{what}: {counted} connections closed as protocol errors, {n} expected:\n{}",
        rig.logs()
    );
}

/// Send `frames` on a fresh peer connection; the node must close it.
fn must_close(rig: &Rig, id: u64, frames: &[Vec<u8>], what: &str) {
    let mut s = peer(&rig.a, id);
    for f in frames {
        // The node may close before reading everything: that is fine.
        let _ = s.write_all(f);
    }
    assert!(closed_by_node(&mut s), "{what}: the node kept the connection open:\n{}", rig.logs());
}

#[test]
fn malformed_input_costs_only_its_connection() {
    let mut rig = Rig::new(|_, _| {});

    // Garbage instead of a hello.
    let mut s = connect(&rig.a);
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let _ = s.write_all(&garbage);
    assert!(closed_by_node(&mut s), "garbage: connection left open");
    rig.check("garbage bytes");

    // A length of 2^62.
    let mut s = connect(&rig.a);
    let _ = s.write_all(&(1u64 << 62).to_be_bytes());
    assert!(closed_by_node(&mut s), "2^62: connection left open");
    rig.check("a 2^62 length");

    // The same after the hello, where frames may be large.
    must_close(&rig, 0xbad1, &[(1u64 << 62).to_be_bytes().to_vec()], "2^62 after hello");
    rig.check("a 2^62 length after the hello");

    // Four bytes of a length, then close.
    let mut s = connect(&rig.a);
    let _ = s.write_all(&[0, 0, 0, 1]);
    s.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_node(&mut s), "half a length: connection left open");
    rig.check("a 4-byte length then close");

    // A zlib bomb: 256 MiB of JSON-ish spaces in about 256 KiB.
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    z.write_all(br#"{"type":"ping","pad":""#).unwrap();
    let block = vec![b' '; 1024 * 1024];
    for _ in 0..256 {
        z.write_all(&block).unwrap();
    }
    let bomb = frame_with_zlib(&z.finish().unwrap());
    assert!(bomb.len() < 2 * 1024 * 1024);
    let before = rig.a.counters().protocol_errors;
    must_close(&rig, 0xbad2, &[bomb], "zlib bomb");
    assert_protocol_errors(&rig, before, 1, "zlib bomb");
    rig.check("a zlib bomb");

    // Paths that escape, in every message that carries one.
    let h = Hash::of(b"x");
    let before = rig.a.counters().protocol_errors;
    let mut sent = 0;
    let abs = rig.root.join("outside/abs.txt").display().to_string();
    for (i, bad) in [
        "../escape",
        "../outside/x",
        abs.as_str(),
        "a/../../escape",
        ".dirsync/index",
        // dirsync's temp names (the exact shape only: see RelPath).
        "x/.dirsync-tmp-0123456789abcdef-1",
    ]
    .iter()
    .enumerate()
    {
        let e = entry_json(bad, "file", 1, &h);
        let frames = [
            format!(r#"{{"type":"index","entries":[{e}],"done":true}}"#),
            format!(r#"{{"type":"update","entries":[{e}]}}"#),
            format!(
                r#"{{"type":"want","files":[{{"path":{},"hash":"{h}"}}]}}"#,
                serde_json::to_string(bad).unwrap()
            ),
            format!(r#"{{"type":"file_start","entry":{e},"content":{{"mode":"full"}}}}"#),
        ];
        for (j, f) in frames.iter().enumerate() {
            must_close(&rig, 0xbad3_0000 + (i * 16 + j) as u64, &[raw_frame(f)], &format!("path {bad:?}"));
            sent += 1;
        }
    }
    assert_protocol_errors(&rig, before, sent, "escaping paths");
    assert!(!rig.root.join("escape").exists());
    rig.check("escaping paths");

    // Deep JSON and a second hello.
    let deep = format!(r#"{{"type":"ping","x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    must_close(&rig, 0xbad4, &[raw_frame(&deep)], "deep JSON");
    let hello = Message::Hello {
        version: wire::PROTOCOL_VERSION,
        node: NodeId(0xbad5),
        listen_port: 1,
        device: NodeId(0xbad5),
        features: vec![],
        newest: 0,
    };
    must_close(&rig, 0xbad5, &[wire::encode(&hello)], "a second hello");
    rig.check("deep JSON and a second hello");
}

/// Answer every want of `path` on `s` with `content`, until the node has
/// asked; whether it asked.
fn serve_wants(s: &mut TcpStream, entry: &Entry, content: &[u8]) -> bool {
    let (asked, _) = wait_until(TIMEOUT, || {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match read_msg(s) {
            Some(Message::Want { files }) if files.iter().any(|f: &WantFile| f.path == entry.path) => {
                for m in [
                    Message::FileStart {
                        entry: entry.clone(),
                        content: ContentMode::Full,
                    },
                    Message::Chunk { data: content.to_vec() },
                    Message::FileEnd,
                ] {
                    let _ = s.write_all(&wire::encode(&m));
                }
                true
            }
            _ => false,
        }
    });
    asked
}

/// A symlink in DIR that points out of it is never written through: not
/// when a peer's newer folder takes its place (links are synced: the
/// folder replaces the link, and what it holds lands inside DIR), and not
/// when a hostile peer sends a link out of DIR and then a file below it.
#[test]
fn a_symlink_inside_dir_is_never_written_through() {
    let mut rig = Rig::new(|a, outside| std::os::unix::fs::symlink(outside, a.join("link")).unwrap());
    let content = b"pwned".to_vec();
    let pwned = Entry {
        path: RelPath::new("link/pwned").unwrap(),
        kind: Kind::File,
        deleted: false,
        size: content.len() as u64,
        mtime: 1_764_000_000_000_000_000,
        version: 4_000_000_000_000_000_000,
        hash: Hash::of(&content),
        vector: Default::default(),
        by: Default::default(),
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    };
    let dir = Entry {
        path: RelPath::new("link").unwrap(),
        kind: Kind::Dir,
        size: 0,
        hash: Hash::ZERO,
        ..pwned.clone()
    };
    let mut s = peer(&rig.a, 0xbad6);
    let index = Message::Index {
        entries: vec![dir, pwned.clone()],
        done: true,
    };
    s.write_all(&wire::encode(&index)).unwrap();
    assert!(
        serve_wants(&mut s, &pwned, &content),
        "the node never asked for link/pwned:\n{}",
        rig.logs()
    );
    let a = rig.dir(&rig.a);
    let (landed, _) = wait_until(TIMEOUT, || fs::read(a.join("link/pwned")).is_ok_and(|c| c == content));
    assert!(landed, "link/pwned did not land:\n{}", rig.logs());
    assert!(
        fs::symlink_metadata(a.join("link")).unwrap().is_dir(),
        "the newer folder replaced the link"
    );
    rig.check("a newer folder where a symlink out of DIR was");

    // A link out of DIR, then a file below it, in one message.
    let outside = rig.root.join("outside");
    let target = outside.to_str().unwrap().to_string();
    let evil = Entry {
        path: RelPath::new("evil").unwrap(),
        kind: Kind::Symlink,
        size: target.len() as u64,
        hash: Hash::of(target.as_bytes()),
        target: Some(target.clone()),
        ..pwned.clone()
    };
    let content = b"pwned below".to_vec();
    let below = Entry {
        path: RelPath::new("evil/pwned").unwrap(),
        size: content.len() as u64,
        hash: Hash::of(&content),
        ..pwned.clone()
    };
    let mut s = peer(&rig.a, 0xbad7);
    // Its index first: a live update heard before it waits for it.
    let index = Message::Index {
        entries: vec![],
        done: true,
    };
    let update = Message::Update {
        entries: vec![evil, below.clone()],
    };
    s.write_all(&wire::encode(&index)).unwrap();
    s.write_all(&wire::encode(&update)).unwrap();
    assert!(
        serve_wants(&mut s, &below, &content),
        "the node never asked for evil/pwned:\n{}",
        rig.logs()
    );
    // The write through the link is refused and counted as a failure;
    // then the link gives way to a folder, as a file would, and the file
    // lands inside DIR.
    let (failed, _) = rig.a.wait_counters(TIMEOUT, |c| c.failures >= 1);
    assert!(failed, "the refused write was not counted as a failure:\n{}", rig.logs());
    assert!(rig.a.log_text().contains("refusing to write through it"), "{}", rig.logs());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "written through the symlink");
    rig.check("a file announced below a symlink out of DIR");
}

/// A small deterministic generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Valid messages with random fields, then byte mutations, over many
/// peer connections: the node closes what is malformed and keeps going.
#[test]
fn mutated_frames_over_the_wire() {
    let mut rig = Rig::new(|_, _| {});
    let mut rng = XorShift(0x6469_7273_796e_6301);
    let paths = ["a", "a/b", "seed.txt", "x.bin", "d/e"];
    let mut frames_sent = 0;
    const CONNECTIONS: u64 = 60;
    for c in 0..CONNECTIONS {
        let mut s = peer(&rig.a, 0xf000 + c);
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        for _ in 0..1 + rng.below(20) {
            let path = RelPath::new(paths[rng.below(paths.len() as u64) as usize]).unwrap();
            let hash = Hash::of(&rng.next().to_le_bytes());
            let entry = Entry {
                path: path.clone(),
                kind: if rng.below(4) == 0 { Kind::Dir } else { Kind::File },
                deleted: rng.below(5) == 0,
                size: if rng.below(3) == 0 { rng.next() } else { rng.below(200_000) },
                mtime: rng.next() as i64 as i128,
                version: rng.next() as i64 as i128,
                hash,
                vector: Default::default(),
                by: Default::default(),
                exec: false,
                mode: 0,
                target: None,
                xattrs: None,
            };
            let junk: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            let msg = match rng.below(10) {
                0 => Message::Index {
                    entries: vec![entry],
                    done: rng.below(2) == 0,
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
                    content: ContentMode::Full,
                },
                5 => Message::Chunk { data: junk },
                6 => Message::FileEnd,
                7 => Message::Unavailable { path },
                8 => Message::Ping,
                _ => Message::Refuse { reason: "no".into() },
            };
            let mut frame = wire::encode(&msg);
            for _ in 0..rng.below(4) {
                let i = rng.below(frame.len() as u64) as usize;
                frame[i] ^= 1 << rng.below(8);
            }
            frames_sent += 1;
            if s.write_all(&frame).is_err() {
                break; // closed by the node: the next connection
            }
        }
        drop(s);
        if c % 20 == 19 {
            rig.check(&format!("{} mutated-frame connections", c + 1));
        }
    }
    println!("mutated frames sent: {frames_sent} over {CONNECTIONS} connections");
    assert!(!rig.a.log_text().contains("panicked"), "{}", rig.a.log_text());
}

/// A client that connects and says nothing, and one that dribbles a byte
/// at a time, are both dropped by the handshake timeout.
#[test]
fn a_stalled_handshake_is_dropped() {
    let mut rig = Rig::new(|_, _| {});
    let mut silent = connect(&rig.a);
    let mut dribble = connect(&rig.a);
    let mut dropped = false;
    for _ in 0..40 {
        if dribble.write_all(&[0]).is_err() {
            dropped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(dropped, "a client dribbling a byte every 0.5 s was never dropped");
    assert!(closed_by_node(&mut silent), "a silent client was never dropped");
    assert!(closed_by_node(&mut dribble));
    rig.check("stalled handshakes");
}

/// 50 connections at once: the handshake cap closes the excess at once,
/// the timeout the rest, and the honest pair keeps syncing meanwhile.
#[test]
fn fifty_connections_at_once() {
    let mut rig = Rig::new(|_, _| {});
    let before = rig.a.counters().over_capacity;
    let mut flood: Vec<TcpStream> = (0..50).map(|_| connect(&rig.a)).collect();
    // While they are all open, the existing honest connection still works.
    rig.check("50 connections opened");
    let (capped, _) = rig.a.wait_counters(TIMEOUT, |c| c.over_capacity > before);
    assert!(capped, "the handshake cap was never hit:\n{}", rig.logs());
    for (i, s) in flood.iter_mut().enumerate() {
        assert!(closed_by_node(s), "flood connection {i} was never closed");
    }
    drop(flood);
    rig.check("50 connections at once");
}

/// Junk on the broadcast port, and a flood of made-up announcements, do not
/// stop discovery: a node started afterwards still joins.
#[test]
fn junk_datagrams_on_the_broadcast_port() {
    let mut rig = Rig::new(|_, _| {});
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_broadcast(true).unwrap();
    let to = ("127.255.255.255", rig.bport);
    let mut rng = XorShift(0x6469_7273_796e_6302);
    let closed_port = free_tcp_port();
    let mut sent = 0;
    for i in 0..3000u64 {
        // 4 in 9 are made-up announcements: more ids than a node remembers.
        let dgram: Vec<u8> = match i % 9 {
            0 => (0..rng.below(1500)).map(|_| rng.next() as u8).collect(),
            1 => vec![b'{'; 4000],
            2 => br#"{"app":"dirsync","version":1,"node":"zz","port":1}"#.to_vec(),
            3 => br#"{"app":"other","version":1,"node":"0000000000000001","port":1}"#.to_vec(),
            4 => format!(
                r#"{{"app":"dirsync","version":1,"node":"{:016x}","port":1,"key":"not hex"}}"#,
                rng.next()
            )
            .into_bytes(),
            5 => br#"{"app":"dirsync","version":1,"node":"0000000000000002","port":0}"#.to_vec(),
            // Made-up nodes at a port nobody listens on.
            _ => format!(
                r#"{{"app":"dirsync","version":1,"node":"{:016x}","port":{closed_port}}}"#,
                rng.next()
            )
            .into_bytes(),
        };
        if sock.send_to(&dgram, to).is_ok() {
            sent += 1;
        }
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!("junk datagrams sent: {sent}");
    rig.check("junk datagrams");
    // A newcomer is still discovered and synced.
    let c_dir = rig.root.join("c");
    fs::create_dir_all(&c_dir).unwrap();
    let mut c = Proc::start(&c_dir, free_tcp_port(), rig.bport, &rig.root.join("c.log"));
    let (ok, _) = wait_until(TIMEOUT, || fs::read(c_dir.join("seed.txt")).is_ok_and(|x| x == b"from b"));
    assert!(
        ok,
        "a node started after the junk never synced:\n{}\n--- c\n{}",
        rig.logs(),
        c.log_text()
    );
    assert!(c.alive());
}

/// More peers than the cap: the excess is closed after its hello, and the
/// honest pair keeps syncing over its connection meanwhile.
#[test]
fn the_peer_cap_holds() {
    let mut rig = Rig::new(|_, _| {});
    const MAX_PEERS: u64 = dirsync::transport::limits::MAX_PEERS as u64;
    let before = rig.a.counters().over_capacity;
    let crowd: Vec<TcpStream> = (0..MAX_PEERS + 4).map(|i| peer(&rig.a, 0xc000 + i)).collect();
    // B holds a place too: at least 4 of the crowd find no room.
    let (capped, _) = rig.a.wait_counters(TIMEOUT, |c| c.over_capacity >= before + 4);
    assert!(capped, "the peer cap was never hit:\n{}", rig.logs());
    let connected = rig.a.counters().connections;
    assert!(connected <= MAX_PEERS + 1, "{connected} connections registered");
    rig.check("more peers than the cap");
    drop(crowd);
    rig.check("the crowd left");
}

/// A peer that keeps asking for files and never reads what it is sent is
/// disconnected before its queue exhausts the node's memory. What it asks
/// for does not compress: the socket's buffers fill after a few files,
/// whatever the machine's load. (It asked for a 6-byte file, 128 of which
/// went in a frame of 863 bytes: every answer then fit in the socket's
/// buffers and the queue stayed short whenever the writer kept up, which
/// failed the test now and then under load.)
#[test]
fn a_peer_that_asks_without_reading_is_dropped() {
    let content: Vec<u8> = (0u32..8192).flat_map(|i| Hash::of(&i.to_le_bytes()).0).collect();
    let hash = Hash::of(&content);
    let mut rig = Rig::new(|a, _| write(a, "noise.bin", &content));
    let before = rig.a.counters().protocol_errors;
    let mut s = peer(&rig.a, 0xbad7);
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let want = Message::Want {
        files: vec![
            WantFile {
                path: RelPath::new("noise.bin").unwrap(),
                hash: hash.into(),
            };
            wire::MAX_ENTRIES
        ],
    };
    let frame = wire::encode(&want);
    println!("one want of {} paths: {} bytes on the wire", wire::MAX_ENTRIES, frame.len());
    let mut sent = 0;
    for _ in 0..64 {
        if s.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
    }
    let (dropped, _) = rig.a.wait_counters(TIMEOUT, |c| c.protocol_errors > before);
    assert!(dropped, "after {sent} wants the node still queues:\n{}", rig.logs());
    assert!(closed_by_node(&mut s), "the connection stayed open");
    rig.check("a peer asking without reading");
}

//! Bounded fuzzing inside `cargo test`: generated and mutated inputs for
//! everything a peer's bytes reach before they become trusted state — the
//! frame decoder, the JSON inside frames, announcements, delta signatures,
//! deltas, the encrypted record layer, and the engine's handling of a
//! connection's messages. Each property asserts no panic plus what must
//! hold of the result (an error, or a value that round-trips).
//!
//! Deterministic: a fixed seed (`DIRSYNC_FUZZ_SEED` to change it) and a
//! fixed number of cases per property (`DIRSYNC_FUZZ_CASES`, default
//! `DEFAULT_CASES`). `just fuzz` runs them with many more cases; the
//! cargo-fuzz targets in `fuzz/` drive the same entry points with
//! coverage guidance where a nightly toolchain is available.

use crate::engine::index::Index;
use crate::engine::{Command, Engine, PieceArrival, PieceFrame, Receive, Transfer};
use crate::fs::delta::{apply_segment, FileSignature, SEGMENT};
use crate::transport::key::ClusterKey;
use crate::transport::secure;
use crate::wire::{
    self, Announce, ChildDigest, ContentMode, Entry, Hash, Kind, Message, NodeId, RelPath, Vector, WantFile, WantedHash, MAX_JSON,
};
use flate2::{write::ZlibEncoder, Compression};
use futures_lite::AsyncReadExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::io::Write;

/// Cases per property in a plain `cargo test`.
const DEFAULT_CASES: u32 = 512;

fn config() -> Config {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("DIRSYNC_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n.min(u32::MAX as u64) as u32),
        rng_seed: RngSeed::Fixed(env("DIRSYNC_FUZZ_SEED").unwrap_or(0x6469_7273_796e_6321)),
        failure_persistence: None,
        // Report a failure in seconds, not after hours of shrinking.
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

// ----- generators ------------------------------------------------------------

const PATHS: &[&str] = &["a", "a/b", "a/b/c.txt", "d", "e.txt", "d/f"];

fn path() -> impl Strategy<Value = RelPath> {
    proptest::sample::select(PATHS).prop_map(|p| RelPath::new(p).expect("pool paths are valid"))
}

fn hash() -> impl Strategy<Value = Hash> {
    prop_oneof![
        (0u8..4).prop_map(|b| Hash::of(&[b])),
        Just(Hash::ZERO),
        any::<[u8; 32]>().prop_map(Hash),
    ]
}

fn time() -> impl Strategy<Value = i128> {
    prop_oneof![
        0i128..10,
        Just(i128::MAX),
        Just(i128::MIN),
        any::<i64>().prop_map(i128::from),
        any::<i128>()
    ]
}

/// Entries whose `version` is or is not their `mtime`, whose maker is
/// known or not, and whose vector is empty, only that maker's change at
/// `version`, or more: each case the compact form (protocol 8) writes
/// differently.
fn entry() -> impl Strategy<Value = Entry> {
    (
        (path(), any::<bool>(), any::<bool>(), prop_oneof![0u64..300_000, any::<u64>()]),
        (time(), prop::option::of(time()), hash()),
        (prop_oneof![Just(0u64), any::<u64>()], 0u8..3, any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |((path, is_dir, deleted, size), (mtime, version, hash), (by, history, other, counter))| {
                let version = version.unwrap_or(mtime);
                let by = NodeId(by);
                let vector = match history {
                    0 => Vector::default(),
                    1 => Vector::single(by, u64::try_from(version).unwrap_or(counter)),
                    _ => Vector::single(by, counter).bump(NodeId(other), version),
                };
                Entry {
                    path,
                    kind: if is_dir { Kind::Dir } else { Kind::File },
                    deleted,
                    size,
                    mtime,
                    version,
                    hash,
                    vector,
                    by,
                    exec: false,
                    mode: 0,
                    target: None,
                    xattrs: None,
                }
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    let entries = || proptest::collection::vec(entry(), 0..6);
    prop_oneof![
        (any::<u32>(), any::<u64>(), any::<u16>(), any::<u64>()).prop_map(|(version, n, listen_port, d)| Message::Hello {
            version,
            node: NodeId(n),
            listen_port,
            device: NodeId(d),
            features: vec![],
            newest: 0,
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(identity, since)| Message::IndexRequest { identity, since }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(identity, since, seq)| Message::IndexHead { identity, since, seq }),
        (hash(), any::<u64>()).prop_map(|(digest, seq)| Message::TreeDigest { digest, seq }),
        prop::option::of(path()).prop_map(|dir| Message::SubtreeQuery { dir }),
        Just(Message::IndexMore),
        (
            prop::option::of(path()),
            prop::option::of(proptest::collection::vec(("[a-z./]{0,6}", hash()), 0..4))
        )
            .prop_map(|(dir, children)| Message::Subtree {
                dir,
                children: children.map(|c| c.into_iter().map(|(name, digest)| ChildDigest { name, digest }).collect()),
            }),
        ".{0,20}".prop_map(|reason| Message::Refuse { reason }),
        (entries(), any::<bool>()).prop_map(|(entries, done)| Message::Index { entries, done }),
        entries().prop_map(|entries| Message::Update { entries }),
        proptest::collection::vec((path(), hash(), 0u8..3), 0..5).prop_map(|files| Message::Want {
            files: files
                .into_iter()
                .map(|(path, hash, named)| {
                    let hash = match named {
                        0 => WantedHash::from(hash),
                        1 => WantedHash::from(hash).prefix(),
                        _ => WantedHash::from(hash).short(),
                    };
                    WantFile { path, hash }
                })
                .collect()
        }),
        (path(), hash(), hash(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(path, hash, base, signature)| {
            Message::WantDelta {
                path,
                hash,
                base,
                signature,
            }
        }),
        (entry(), prop::option::of(hash())).prop_map(|(entry, base)| Message::FileStart {
            entry,
            content: base.map_or(ContentMode::Full, |base| ContentMode::Delta { base }),
        }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|data| Message::Chunk { data }),
        Just(Message::FileEnd),
        path().prop_map(|path| Message::Unavailable { path }),
        Just(Message::Ping),
        (path(), hash()).prop_map(|(path, hash)| Message::PieceMapWant { path, hash }),
        (
            path(),
            hash(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..96),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..3)
        )
            .prop_map(|(path, hash, piece_size, values, zeros)| Message::PieceMap {
                path,
                hash,
                piece_size,
                values,
                zeros,
            }),
        (path(), hash(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(path, hash, pieces)| Message::Have {
            path,
            hash,
            pieces
        }),
        (path(), hash(), any::<u64>()).prop_map(|(path, hash, index)| Message::PieceWant { path, hash, index }),
        (
            path(),
            hash(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(path, hash, index, offset, data)| {
                Message::Piece {
                    path,
                    hash,
                    index,
                    offset,
                    data,
                }
            }),
    ]
}

/// A byte-level mutation of a valid input.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Duplicate(usize, usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let m = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0xff), Just(b'"'), Just(b'{'), Just(b'/'), Just(b'.'), any::<u8>()]
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ];
    proptest::collection::vec(m, 1..5)
}

fn mutate(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = data.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => data[i % len] ^= b,
            Mutation::Set(i, b) if len > 0 => data[i % len] = *b,
            Mutation::Truncate(i) => data.truncate(i % (len + 1)),
            Mutation::Insert(i, v) => {
                let at = i % (len + 1);
                data.splice(at..at, v.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let at = i % len;
                data.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(i, n) if len > 0 => {
                let at = i % len;
                let piece = data[at..(at + n).min(len)].to_vec();
                data.splice(at..at, piece);
            }
            _ => {}
        }
    }
    data
}

fn zlib(json: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    z.write_all(json).expect("writing into a Vec");
    z.finish().expect("writing into a Vec")
}

/// A frame around `json` (valid zlib) and `payload`.
fn frame_of_json(json: &[u8], payload: &[u8]) -> Vec<u8> {
    let z = zlib(json);
    let body_len = 4 + z.len() + payload.len();
    let mut out = (body_len as u64).to_be_bytes().to_vec();
    out.extend_from_slice(&(z.len() as u32).to_be_bytes());
    out.extend_from_slice(&z);
    out.extend_from_slice(payload);
    out
}

/// Decode `frame`: never a panic; a success re-encodes, as every
/// version spoken writes it, to a frame that decodes to the same message.
fn check_decode(frame: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((msg, used))) = wire::decode(frame) {
        prop_assert!(used <= frame.len());
        for version in wire::OLDEST_PROTOCOL_VERSION..=wire::PROTOCOL_VERSION {
            let again = wire::encode_in(&msg, version);
            let (back, _) = wire::decode(&again)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .expect("a whole frame");
            prop_assert_eq!(back, msg.clone(), "written in {}", version);
        }
    }
    Ok(())
}

/// JSON shaped like messages: the right tags, with random fields, values
/// (paths that escape, huge numbers, deep nesting) and structure. (One
/// long list of alternatives, one per message shape: read as a table.)
fn jsonish() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![
            "../escape",
            "/etc/passwd",
            "a/../../b",
            "a\u{0}b",
            ".dirsync/index",
            "x/.dirsync-tmp-1",
            "a//b",
            "",
            "ok.txt",
            "0000000000000001",
            "file",
            "dir",
            "full",
            "delta",
        ])
        .prop_map(|s| Value::String(s.into())),
        "[a-z0-9/.]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop::sample::select(vec![
                    "type",
                    "path",
                    "entries",
                    "files",
                    "hash",
                    "base",
                    "kind",
                    "size",
                    "mtime",
                    "version",
                    "deleted",
                    "done",
                    "node",
                    "listen_port",
                    "reason",
                    "entry",
                    "content",
                    "mode",
                ])
                .prop_map(String::from),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_flat_map(|v| {
        let tags = prop::sample::select(vec![
            "hello",
            "refuse",
            "index",
            "update",
            "want",
            "want_delta",
            "file_start",
            "chunk",
            "file_end",
            "unavailable",
            "ping",
            "bogus",
        ]);
        (Just(v), tags).prop_map(|(v, tag)| match v {
            Value::Object(mut m) => {
                m.insert("type".into(), Value::String(tag.into()));
                Value::Object(m)
            }
            other => other,
        })
    })
}

/// Every path a message names.
fn paths_of(msg: &Message) -> Vec<&RelPath> {
    match msg {
        Message::Index { entries, .. } | Message::Update { entries } => entries.iter().map(|e| &e.path).collect(),
        Message::Want { files } => files.iter().map(|f| &f.path).collect(),
        Message::WantDelta { path, .. } | Message::Unavailable { path } => vec![path],
        Message::FileStart { entry, .. } => vec![&entry.path],
        _ => Vec::new(),
    }
}

/// A transport state pair from a real Noise handshake (initiator, responder).
fn noise_pair(key: &ClusterKey) -> (snow::StatelessTransportState, snow::StatelessTransportState) {
    let psk = key.psk();
    let params: snow::params::NoiseParams = secure::NOISE_PARAMS.parse().expect("valid params");
    let b = || snow::Builder::new(params.clone()).psk(0, &psk).expect("psk");
    let mut i = b().build_initiator().expect("initiator");
    let mut r = b().build_responder().expect("responder");
    let (mut m1, mut m2, mut scratch) = ([0u8; 128], [0u8; 128], [0u8; 128]);
    let n = i.write_message(&[], &mut m1).expect("message 1");
    r.read_message(&m1[..n], &mut scratch).expect("read 1");
    let n = r.write_message(&[], &mut m2).expect("message 2");
    i.read_message(&m2[..n], &mut scratch).expect("read 2");
    (
        i.into_stateless_transport_mode().expect("transport"),
        r.into_stateless_transport_mode().expect("transport"),
    )
}

/// `plain` sealed into records of at most `max` plaintext bytes each.
fn seal(tx: &snow::StatelessTransportState, plain: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (nonce, piece) in plain.chunks(max.max(1)).enumerate() {
        let mut rec = vec![0u8; piece.len() + 16];
        let n = tx.write_message(nonce as u64, piece, &mut rec).expect("seal");
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&rec[..n]);
    }
    out
}

// ----- properties -------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_frame_decoder_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_decode(&data)?;
        // The same bytes behind a plausible length prefix reach the body decoder.
        let mut framed = (data.len() as u64).to_be_bytes().to_vec();
        framed.extend_from_slice(&data);
        check_decode(&framed)?;
    }

    #[test]
    fn fuzz_frame_decoder_mutated_messages(msg in message(), muts in mutations(), version in wire::OLDEST_PROTOCOL_VERSION..=wire::PROTOCOL_VERSION) {
        let frame = wire::encode_in(&msg, version);
        let (back, used) = wire::decode(&frame).expect("a valid frame").expect("whole");
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(&back, &msg);
        check_decode(&mutate(frame, &muts))?;
    }

    #[test]
    fn fuzz_frame_json_bodies(v in jsonish(), payload in proptest::collection::vec(any::<u8>(), 0..8)) {
        let json = serde_json::to_vec(&v).expect("a Value serializes");
        check_decode(&frame_of_json(&json, &payload))?;
        // Paths that escape never survive decoding.
        if let Ok(Some((msg, _))) = wire::decode(&frame_of_json(&json, &payload)) {
            for p in paths_of(&msg) {
                let s = p.as_str();
                prop_assert!(!s.starts_with('/') && !s.split('/').any(|c| c == ".." || c.is_empty()) && !s.contains('\0'), "escaping path decoded: {s:?}");
            }
        }
    }

    #[test]
    fn fuzz_announcements(data in proptest::collection::vec(any::<u8>(), 0..200), node in any::<u64>(), port in any::<u16>(), muts in mutations(), keyed in any::<bool>()) {
        let _ = Announce::decode(&data);
        let a = Announce::new(NodeId(node), port).with_key(keyed.then(|| ClusterKey::from_bytes([node as u8; 32]).fingerprint()));
        prop_assert_eq!(Announce::decode(&a.encode()).expect("own announcement"), a.clone());
        if let Ok(b) = Announce::decode(&mutate(a.encode(), &muts)) {
            prop_assert_eq!(b.app.as_str(), Announce::APP);
            prop_assert!(b.key.as_ref().is_none_or(|k| k.len() == 16));
        }
    }

    #[test]
    fn fuzz_signatures(data in proptest::collection::vec(any::<u8>(), 0..300), base_len in 0usize..5000, muts in mutations(), new in proptest::collection::vec(any::<u8>(), 0..3000)) {
        if let Ok(sig) = FileSignature::from_bytes(&data) {
            let _ = sig.diff_segment(0, &new);
        }
        let base: Vec<u8> = (0..base_len).map(|i| (i * 7 % 256) as u8).collect();
        let good = FileSignature::of_file(&mut std::io::Cursor::new(&base), base.len() as u64).expect("in memory").to_bytes();
        if let Ok(sig) = FileSignature::from_bytes(&mutate(good, &muts)) {
            // Whatever a peer's signature says, diffing against it is safe...
            let d = sig.diff_segment(0, &new).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // ...and what it yields is applied within bounds.
            if let Ok(out) = apply_segment(&base, &d) {
                prop_assert!(out.len() as u64 <= SEGMENT);
            }
        }
    }

    #[test]
    fn fuzz_delta_apply(base in proptest::collection::vec(any::<u8>(), 0..2000), new in proptest::collection::vec(any::<u8>(), 0..2000), muts in mutations(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let sig = FileSignature::of_file(&mut std::io::Cursor::new(&base), base.len() as u64).expect("in memory");
        let delta = sig.diff_segment(0, &new).expect("diff");
        prop_assert_eq!(apply_segment(&base, &delta).expect("own delta applies"), new);
        for d in [mutate(delta, &muts), junk] {
            if let Ok(out) = apply_segment(&base, &d) {
                prop_assert!(out.len() as u64 <= SEGMENT);
            }
        }
    }

    #[test]
    fn fuzz_record_layer(plain in proptest::collection::vec(any::<u8>(), 0..3000), max in 1usize..700, muts in mutations(), junk in proptest::collection::vec(any::<u8>(), 0..200)) {
        let key = ClusterKey::from_bytes([5; 32]);
        let (tx, rx) = noise_pair(&key);
        let sealed = seal(&tx, &plain, max);
        let (reader, _) = async_io_pair(sealed.clone(), rx);
        prop_assert_eq!(read_all(reader).expect("intact records read back"), plain.clone());
        for bytes in [mutate(sealed, &muts), junk] {
            let (_, rx) = noise_pair(&key);
            let (reader, _) = async_io_pair(bytes.clone(), rx);
            // Anything altered fails to authenticate, or is a shorter
            // prefix of the truth (records cut off whole at the end).
            if let Ok(out) = read_all(reader) {
                prop_assert!(plain.starts_with(&out), "forged plaintext accepted");
            }
        }
    }

    #[test]
    fn fuzz_engine_connection_messages(msgs in proptest::collection::vec(message(), 1..24), local in proptest::collection::vec(entry(), 0..6)) {
        const PEER: NodeId = NodeId(7);
        let mut index = Index::default();
        for e in local {
            index.insert(e);
        }
        let mut engine = Engine::new(NodeId(1), index);
        engine.handle_connected(PEER, PEER, crate::wire::PROTOCOL_VERSION);
        engine.take_commands();
        let mut streaming = None;
        for msg in msgs {
            let name = msg.name();
            match msg {
                // Content frames go through the engine's decisions, as the
                // node's do; what it keeps is reported received.
                Message::FileStart { entry, .. } => {
                    streaming = Some(entry.clone());
                    engine.handle_file_start(PEER, &entry);
                }
                Message::Chunk { .. } => {
                    engine.handle_chunk(PEER);
                }
                Message::FileEnd => {
                    if let (Receive::Write { .. }, Some(entry)) = (engine.handle_file_end(PEER), streaming.take()) {
                        engine.handle_received(PEER, entry, Transfer::Full, Ok(1));
                    }
                }
                // As the node does: what the engine lets it write is a
                // piece, here always a bad one.
                Message::Piece { path, hash, index, offset, data } => {
                    if let PieceFrame::Write { .. } = engine.handle_piece(PEER, &path, hash, index, offset, data.len() as u64) {
                        engine.handle_piece_done(PEER, &path, index, PieceArrival::Broken);
                    }
                }
                other => engine.handle_message(PEER, other),
            }
            let commands = engine.take_commands();
            for c in &commands {
                // Local decisions are not for a peer.
                let Some(peer) = c.peer() else { continue };
                // Ourselves: a change decided here (a file giving way to a
                // folder), announced to every peer.
                prop_assert!(peer == PEER || peer == engine.me(), "a command for a peer that said nothing: {:?}", c);
                if let Command::Close { reason, .. } = c {
                    prop_assert!(!reason.is_empty());
                }
            }
            if name == "hello" || name == "refuse" {
                prop_assert!(commands.iter().any(|c| matches!(c, Command::Close { .. })), "{} after the handshake did not close", name);
            }
        }
    }
}

/// A reader over `bytes` through the record layer, as the responder.
fn async_io_pair(bytes: Vec<u8>, rx: snow::StatelessTransportState) -> (secure::Reader<futures_lite::io::Cursor<Vec<u8>>>, ()) {
    (secure::Reader::with_state(futures_lite::io::Cursor::new(bytes), rx), ())
}

fn read_all(mut r: secure::Reader<futures_lite::io::Cursor<Vec<u8>>>) -> std::io::Result<Vec<u8>> {
    futures_lite::future::block_on(async {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    })
}

#[test]
fn zlib_bomb_stops_at_the_cap() {
    // 64 MiB of zeros compress to about 64 KiB: decoding stops at MAX_JSON.
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![b' '; 1024 * 1024];
    for _ in 0..64 {
        z.write_all(&zeros).expect("writing into a Vec");
    }
    let bomb = z.finish().expect("writing into a Vec");
    let mut frame = ((4 + bomb.len()) as u64).to_be_bytes().to_vec();
    frame.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bomb);
    assert_eq!(wire::decode(&frame), Err(wire::WireError::JsonTooLarge));
    const { assert!(MAX_JSON < 64 * 1024 * 1024) };
}

#[test]
fn deep_json_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        let json = format!(r#"{{"type":"ping","x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        let frame = frame_of_json(json.as_bytes(), &[]);
        assert!(
            matches!(wire::decode(&frame), Err(wire::WireError::Json(_))),
            "depth {depth} accepted"
        );
    }
}

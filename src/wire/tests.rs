use super::*;

fn path(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn file_entry() -> Entry {
    Entry {
        path: path("docs/report.txt"),
        kind: Kind::File,
        deleted: false,
        size: 11,
        mtime: 1_764_000_000_123_456_789,
        version: 1_764_000_000_123_456_789,
        hash: Hash::of(b"hello world"),
        vector: Vector::single(NodeId(0xa1b2_c3d4_e5f6_0718), 1_764_000_000_123_456_789),
        by: NodeId(0xa1b2_c3d4_e5f6_0718),
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    }
}

/// One example of every message, in the order docs/PROTOCOL.md lists them.
/// (Long because it is a table: one literal per message.)
pub(crate) fn examples() -> Vec<(&'static str, Message)> {
    let e = file_entry();
    let tomb = Entry {
        path: path("old.txt"),
        kind: Kind::File,
        deleted: true,
        size: 0,
        mtime: 1_764_000_100_000_000_000,
        version: 1_764_000_100_000_000_000,
        hash: Hash::ZERO,
        vector: Vector::single(NodeId(0xa1b2_c3d4_e5f6_0718), 1_764_000_000_123_456_789).bump(NodeId(0xfeed), 1_764_000_100_000_000_000),
        by: NodeId(0xfeed),
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    };
    let dir = Entry {
        path: path("docs"),
        kind: Kind::Dir,
        deleted: false,
        size: 0,
        mtime: 1_764_000_000_000_000_000,
        version: 1_764_000_000_000_000_000,
        hash: Hash::ZERO,
        vector: Vector::single(NodeId(0xa1b2_c3d4_e5f6_0718), 1_764_000_000_000_000_000),
        by: NodeId(0xa1b2_c3d4_e5f6_0718),
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    };
    vec![
        (
            "hello",
            Message::Hello {
                version: OLDEST_PROTOCOL_VERSION,
                node: NodeId(0x1234_5678_9abc_def0),
                listen_port: 6000,
                device: NodeId(0x0fed_cba9_8765_4321),
                features: vec![FEATURE_SPARSE_PIECES.into()],
                newest: PROTOCOL_VERSION,
            },
        ),
        (
            "index_request",
            Message::IndexRequest {
                identity: 0x5eed_0000_0000_0001,
                since: 41,
            },
        ),
        (
            "index_head",
            Message::IndexHead {
                identity: 0x5eed_0000_0000_0002,
                since: 41,
                seq: 44,
            },
        ),
        (
            "refuse",
            Message::Refuse {
                reason: "protocol version 3 is not spoken here (this node speaks 4)".into(),
            },
        ),
        (
            "index",
            Message::Index {
                entries: vec![dir.clone(), e.clone()],
                done: true,
            },
        ),
        ("update", Message::Update { entries: vec![tomb] }),
        (
            "update_links_and_modes",
            Message::Update {
                entries: vec![
                    Entry { mode: 0o640, ..e.clone() },
                    Entry {
                        path: RelPath::new("docs/latest").unwrap(),
                        kind: Kind::Symlink,
                        size: 3,
                        hash: Hash::of(b"v3/"),
                        target: Some("v3/".into()),
                        ..e.clone()
                    },
                ],
            },
        ),
        (
            "update_xattrs",
            Message::Update {
                entries: vec![Entry {
                    xattrs: Some(crate::wire::Xattrs(
                        [
                            ("user.checksum".to_string(), b"md5:0f3a".to_vec()),
                            ("user.tag".to_string(), vec![0, 1, 0xff]),
                        ]
                        .into(),
                    )),
                    ..e.clone()
                }],
            },
        ),
        (
            "want",
            Message::Want {
                files: vec![WantFile {
                    path: e.path.clone(),
                    hash: crate::wire::WantedHash::from(e.hash).short(),
                }],
            },
        ),
        (
            "want_delta",
            Message::WantDelta {
                path: e.path.clone(),
                hash: e.hash,
                base: Hash::of(b"hello"),
                signature: vec![0xAB; 40],
            },
        ),
        (
            "file_start_full",
            Message::FileStart {
                entry: e.clone(),
                content: ContentMode::Full,
            },
        ),
        (
            "file_start_delta",
            Message::FileStart {
                entry: e.clone(),
                content: ContentMode::Delta { base: Hash::of(b"hello") },
            },
        ),
        (
            "chunk",
            Message::Chunk {
                data: b"hello world".to_vec(),
            },
        ),
        ("file_end", Message::FileEnd),
        (
            "files",
            Message::Files {
                files: vec![
                    FileHead {
                        path: path("docs/a.txt"),
                        size: 3,
                    },
                    FileHead {
                        path: path("docs/b.txt"),
                        size: 0,
                    },
                    FileHead {
                        path: path("docs/report.txt"),
                        size: 11,
                    },
                ],
                contents: b"abchello world".to_vec(),
            },
        ),
        ("unavailable", Message::Unavailable { path: e.path }),
        ("ping", Message::Ping),
        ("index_more", Message::IndexMore),
        (
            "subtree_query",
            Message::SubtreeQuery {
                dir: Some(RelPath::new("docs").unwrap()),
            },
        ),
        (
            "subtree",
            Message::Subtree {
                dir: Some(RelPath::new("docs").unwrap()),
                children: Some(vec![ChildDigest {
                    name: "report.txt".into(),
                    digest: Hash::of(b"the leaf of docs/report.txt"),
                }]),
            },
        ),
        (
            "tree_digest",
            Message::TreeDigest {
                digest: Hash::of(b"the whole tree"),
                seq: 44,
            },
        ),
        (
            "piece_map_want",
            Message::PieceMapWant {
                path: path("videos/talk.mp4"),
                hash: Hash::of(b"a large file"),
            },
        ),
        (
            "piece_map",
            Message::PieceMap {
                path: path("videos/talk.mp4"),
                hash: Hash::of(b"a large file"),
                piece_size: 4 * 1024 * 1024,
                values: vec![0xCD; 64 * 32],
                zeros: vec![],
            },
        ),
        (
            "piece_map_with_zeros",
            Message::PieceMap {
                path: path("disk.img"),
                hash: Hash::of(b"a sparse file"),
                piece_size: 512 * 1024,
                values: vec![0xCD; 8 * 32],
                zeros: vec![(1, 4), (6, 8)],
            },
        ),
        (
            "have",
            Message::Have {
                path: path("videos/talk.mp4"),
                hash: Hash::of(b"a large file"),
                pieces: vec![0x0F, 0, 0, 0, 0, 0, 0, 0x80],
            },
        ),
        (
            "piece_want",
            Message::PieceWant {
                path: path("videos/talk.mp4"),
                hash: Hash::of(b"a large file"),
                index: 63,
            },
        ),
        (
            "piece",
            Message::Piece {
                path: path("videos/talk.mp4"),
                hash: Hash::of(b"a large file"),
                index: 63,
                offset: 1024 * 1024,
                data: vec![0x5A; 1024 * 1024],
            },
        ),
    ]
}

/// What a snapshot shows: the JSON part as sent to a peer of this
/// version, and the raw payload's size.
fn render(msg: &Message) -> String {
    let json = dialect::written_in(PROTOCOL_VERSION, || serde_json::to_string_pretty(msg)).unwrap();
    format!("{json}\n+ raw payload: {} bytes", msg.payload().len())
}

#[test]
fn every_message_snapshot() {
    for (name, msg) in examples() {
        insta::assert_snapshot!(name, render(&msg));
    }
}

#[test]
fn announce_snapshot_and_round_trip() {
    let a = Announce::new(NodeId(0xfeed), 6000);
    let bytes = a.encode();
    insta::assert_snapshot!("announce", String::from_utf8(bytes.clone()).unwrap());
    assert_eq!(Announce::decode(&bytes).unwrap(), a);
}

#[test]
fn keyed_announce_snapshot_and_round_trip() {
    let a = Announce::new(NodeId(0xfeed), 6000).with_key(Some("4f6f84a5d5b13be1".into()));
    let bytes = a.encode();
    insta::assert_snapshot!("announce_keyed", String::from_utf8(bytes.clone()).unwrap());
    assert_eq!(Announce::decode(&bytes).unwrap(), a);
    let bad = br#"{"app":"dirsync","version":1,"node":"000000000000feed","port":1,"key":"xyz"}"#;
    assert!(Announce::decode(bad).is_err());
}

#[test]
fn announce_rejects_junk() {
    assert!(Announce::decode(b"").is_err());
    assert!(Announce::decode(b"\xff\x00garbage").is_err());
    assert!(Announce::decode(br#"{"app":"other","version":1,"node":"000000000000feed","port":1}"#).is_err());
    assert!(Announce::decode(&vec![b' '; MAX_DATAGRAM + 1]).is_err());
}

#[test]
fn every_message_round_trips_as_each_version_writes_it() {
    for version in OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION {
        for (name, msg) in examples() {
            let frame = encode_in(&msg, version);
            let (back, used) = decode(&frame).unwrap().unwrap();
            assert_eq!(back, msg, "{name} in {version}");
            assert_eq!(used, frame.len(), "{name} in {version}");
        }
    }
}

/// Protocol 8 writes hashes in base64 and leaves out what an entry's
/// other fields imply; 7 writes everything, in hex. Either reads both.
#[test]
fn compact_entries_leave_out_what_follows_and_read_back_whole() {
    let e = file_entry();
    let whole = dialect::written_in(7, || serde_json::to_string(&e)).unwrap();
    let compact = dialect::written_in(8, || serde_json::to_string(&e)).unwrap();
    assert!(
        whole.contains("\"version\"") && whole.contains("\"vector\"") && whole.contains(&e.hash.to_string()),
        "{whole}"
    );
    assert!(!compact.contains("\"version\"") && !compact.contains("\"vector\""), "{compact}");
    assert!(
        compact.contains(&format!("\"hash\":\"{}\"", dialect::to_base64(&e.hash.0))),
        "{compact}"
    );
    for json in [&whole, &compact] {
        assert_eq!(serde_json::from_str::<Entry>(json).unwrap(), e);
    }
    // What does not follow is written: a version after the mtime, a
    // vector with more than its maker's change, an empty one with a maker.
    let others = [
        Entry {
            version: e.mtime + 1,
            ..e.clone()
        },
        Entry {
            vector: e.vector.bump(NodeId(7), e.version),
            ..e.clone()
        },
        Entry {
            vector: Vector::default(),
            ..e.clone()
        },
        Entry {
            by: NodeId(0),
            vector: Vector::default(),
            ..e.clone()
        },
        Entry {
            mtime: -5,
            version: -5,
            vector: Vector::default(),
            ..e.clone()
        },
    ];
    for other in others {
        let json = dialect::written_in(8, || serde_json::to_string(&other)).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), other, "{json}");
    }
    // A want's prefix: 8 bytes, 16 hex digits or 11 base64 characters;
    // from 8 the 4 bytes of a short one, 8 or 6.
    for (want, whole, compact) in [
        (WantedHash::from(e.hash).prefix(), 18, 13),
        (WantedHash::from(e.hash).short(), 10, 8),
    ] {
        for version in [7, 8] {
            let json = dialect::written_in(version, || serde_json::to_string(&want)).unwrap();
            assert_eq!(json.len(), if version == 7 { whole } else { compact }, "{json}");
            assert_eq!(serde_json::from_str::<WantedHash>(&json).unwrap(), want);
            assert!(want.names(&e.hash) && !want.names(&Hash::of(b"another")));
        }
    }
}

/// From 8 a want names a version by 4 bytes of its hash; a peer speaking
/// 7 is sent 8.
#[test]
fn wants_name_versions_by_4_bytes_from_8_and_by_8_in_7() {
    let e = file_entry();
    let want = Message::Want {
        files: vec![WantFile {
            path: e.path.clone(),
            hash: e.hash.into(),
        }],
    };
    let named = |m: Message| match m {
        Message::Want { files } => files[0].hash,
        other => panic!("{other:?}"),
    };
    assert_eq!(named(want.clone().spoken_in(7)), WantedHash::from(e.hash).prefix());
    assert_eq!(named(want.spoken_in(8)), WantedHash::from(e.hash).short());
}

/// Issue 13, bug 1: times beyond 64-bit nanoseconds (after 2262, before
/// 1677) travel exactly, as decimal strings; the others stay numbers.
#[test]
fn times_beyond_64_bits_round_trip() {
    let mut e = match examples().into_iter().find(|(name, _)| *name == "index") {
        Some((_, Message::Index { entries, .. })) => entries[1].clone(),
        other => panic!("{other:?}"),
    };
    for t in [10_413_792_000_123_456_789i128, -11_676_096_000_000_000_001, i128::MAX, i128::MIN, 7] {
        e.mtime = t;
        e.version = t.saturating_sub(1);
        let msg = Message::Update { entries: vec![e.clone()] };
        for version in OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION {
            let (back, _) = decode(&encode_in(&msg, version)).unwrap().unwrap();
            assert_eq!(back, msg);
        }
    }
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.contains("\"mtime\":7"), "{json}");
}

#[test]
fn incomplete_frames_ask_for_more() {
    let frame = encode(&examples()[2].1);
    for cut in 0..frame.len() {
        assert_eq!(decode(&frame[..cut]).unwrap(), None, "cut at {cut}");
    }
}

#[test]
fn two_frames_in_one_buffer() {
    let mut buf = encode(&Message::FileEnd);
    let first = buf.len();
    buf.extend(encode(&Message::Chunk { data: vec![7; 3] }));
    let (m1, n1) = decode(&buf).unwrap().unwrap();
    assert_eq!((m1, n1), (Message::FileEnd, first));
    let (m2, _) = decode(&buf[n1..]).unwrap().unwrap();
    assert_eq!(m2, Message::Chunk { data: vec![7; 3] });
}

#[test]
fn oversized_length_is_refused_before_reading() {
    let huge = (1u64 << 62).to_be_bytes();
    assert!(matches!(decode(&huge), Err(WireError::TooLarge(_))));
    assert!(matches!(body_len((MAX_FRAME + 1).to_be_bytes()), Err(WireError::TooLarge(_))));
    assert_eq!(body_len(MAX_FRAME.to_be_bytes()), Ok(MAX_FRAME as usize));
}

#[test]
fn corrupt_bodies_are_errors_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0, 0],
        vec![0, 0, 0, 50, 1, 2],            // json length past the end
        vec![0, 0, 0, 3, 0xde, 0xad, 0xbe], // not zlib
        {
            // valid zlib, not JSON
            let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
            z.write_all(b"not json").unwrap();
            let zj = z.finish().unwrap();
            let mut b = (zj.len() as u32).to_be_bytes().to_vec();
            b.extend(zj);
            b
        },
    ];
    for body in cases {
        assert!(decode_body(body.clone()).is_err(), "{body:?}");
    }
    // Flip every byte of a valid frame once: never a panic.
    let frame = encode(&examples()[2].1);
    for i in LEN_PREFIX..frame.len() {
        let mut bad = frame[LEN_PREFIX..].to_vec();
        bad[i - LEN_PREFIX] ^= 0x5a;
        let _ = decode_body(bad);
    }
}

fn body_with_json(json: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    z.write_all(json).unwrap();
    let zj = z.finish().unwrap();
    let mut b = (zj.len() as u32).to_be_bytes().to_vec();
    b.extend(zj);
    b.extend_from_slice(payload);
    b
}

#[test]
fn zlib_bomb_stops_at_the_cap() {
    // 64 MiB of spaces compresses to ~64 KiB; decoding must stop at MAX_JSON.
    let body = body_with_json(&vec![b' '; 64 * 1024 * 1024], &[]);
    assert!(body.len() < 1024 * 1024);
    assert_eq!(decode_body(body), Err(WireError::JsonTooLarge));
}

#[test]
fn payload_on_a_message_without_one_is_refused() {
    let body = body_with_json(br#"{"type":"file_end"}"#, b"extra");
    assert_eq!(decode_body(body), Err(WireError::UnexpectedPayload("file_end")));
}

#[test]
fn hostile_paths_fail_the_decode() {
    for p in ["../escape", "/etc/passwd", "a/../../b", ".dirsync/index", "a\u{0}b"] {
        let json = serde_json::json!({"type": "want", "files": [{"path": p, "hash": Hash::ZERO}]});
        let body = body_with_json(json.to_string().as_bytes(), &[]);
        assert!(matches!(decode_body(body), Err(WireError::Json(_))), "{p}");
    }
}

#[test]
fn too_many_entries_are_refused() {
    let files: Vec<_> = (0..=MAX_ENTRIES)
        .map(|i| WantFile {
            path: RelPath::new(format!("f{i}")).unwrap(),
            hash: Hash::ZERO.into(),
        })
        .collect();
    let frame = encode(&Message::Want { files });
    assert!(matches!(decode(&frame), Err(WireError::TooManyEntries(_))));
}

#[test]
fn files_whose_sizes_do_not_add_up_are_refused() {
    let head = |size| FileHead { path: path("f"), size };
    for (sizes, contents) in [(vec![3, 4], 6), (vec![3], 4), (vec![u64::MAX, 2], 1)] {
        let files = sizes.into_iter().map(head).collect();
        let frame = encode(&Message::Files {
            files,
            contents: vec![7; contents],
        });
        assert_eq!(decode(&frame), Err(WireError::FilesSizes));
    }
}

#[test]
fn file_bytes_cost_no_base64() {
    // An incompressible 1 MiB chunk: the frame may add only a few bytes.
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let frame = encode(&Message::Chunk { data: data.clone() });
    assert!(frame.len() < data.len() + 64, "overhead {}", frame.len() - data.len());
}

#[test]
fn node_id_and_hash_parse_strictly() {
    assert!(serde_json::from_str::<NodeId>("\"12\"").is_err());
    assert!(serde_json::from_str::<NodeId>("\"zzzzzzzzzzzzzzzz\"").is_err());
    assert!(serde_json::from_str::<Hash>("\"00\"").is_err());
    let h = Hash::of(b"x");
    assert_eq!(serde_json::from_str::<Hash>(&serde_json::to_string(&h).unwrap()).unwrap(), h);
    // Multi-byte characters must not make the hex parser panic.
    let odd = format!("\"{}\"", "é".repeat(32));
    assert!(serde_json::from_str::<Hash>(&odd).is_err());
}

#[test]
fn protocol_doc_shows_every_snapshot() {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/wire/snapshots");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        // The snapshot body follows insta's `---` header.
        let body = text.splitn(3, "---\n").nth(2).unwrap().trim();
        let json = body.rsplit_once("\n+ raw payload").map_or(body, |(j, _)| j);
        assert!(doc.contains(json), "docs/PROTOCOL.md lacks this snapshot:\n{json}");
        checked += 1;
    }
    assert_eq!(checked, examples().len() + 2, "a snapshot per message plus the two announcements");
}

#[test]
fn stored_zlib_streams_decode_with_a_standard_decoder() {
    use flate2::read::ZlibDecoder;
    use std::io::Read;
    for len in [0usize, 1, 511, 512, 65_535, 65_536, 140_000] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut back = Vec::new();
        ZlibDecoder::new(&zlib_stored(&data)[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data, "{len} bytes");
    }
}

#[test]
fn small_json_is_stored_and_large_json_deflated() {
    let small = Message::FileEnd;
    let frame = encode(&small);
    let json = serde_json::to_vec(&small).unwrap();
    // Stored: JSON plus 2 header, 5 block and 4 checksum bytes.
    assert_eq!(frame.len(), LEN_PREFIX + 4 + json.len() + 11);
    assert_eq!(decode(&frame).unwrap().unwrap().0, small);

    let files: Vec<WantFile> = (0..200)
        .map(|i| WantFile {
            path: RelPath::new(format!("folder/file{i}.txt")).unwrap(),
            hash: Hash::of(b"same").into(),
        })
        .collect();
    let large = Message::Want { files };
    let frame = encode(&large);
    assert!(
        frame.len() < serde_json::to_vec(&large).unwrap().len() / 2,
        "repetitive JSON deflates"
    );
    assert_eq!(decode(&frame).unwrap().unwrap().0, large);
}

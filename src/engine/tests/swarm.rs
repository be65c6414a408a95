//! Swarm transfers: a file of several pieces, fetched from every peer that
//! holds pieces of it, each piece checked against the map.

use super::*;
use crate::engine::swarm::{MAX_BAD_FROM_PEER, PIECES_PER_LONE_SOURCE, PIECES_PER_PEER, PIECES_PER_SOURCE};
use crate::wire::pieces::{values_of, Layout, PieceValue, MIN_PIECE_SIZE};

const C: NodeId = NodeId(40);
const PIECE: u64 = MIN_PIECE_SIZE;

/// A file of 5 pieces (the last one short), its entry and its map.
fn content() -> Vec<u8> {
    (0..5 * PIECE - 300).map(|i| (i * 7 % 253) as u8).collect()
}

fn values(data: &[u8]) -> Vec<PieceValue> {
    values_of(data, PIECE)
}

fn large() -> Entry {
    file("video.bin", 5 * S, &content())
}

fn map_msg(e: &Entry, values: &[PieceValue]) -> Message {
    Message::PieceMap {
        path: e.path.clone(),
        hash: e.hash,
        piece_size: PIECE,
        values: values.concat(),
        zeros: vec![],
    }
}

/// An engine cutting files in `PIECE`s, connected to `peers`, that just
/// heard `announcers` announce `large()`.
fn swarming(peers: &[NodeId], announcers: &[NodeId]) -> (Engine, Vec<Command>) {
    let mut e = Engine::new(ME, Index::default()).with_piece_size(PIECE);
    for peer in peers {
        connect(&mut e, *peer);
    }
    e.take_commands();
    for peer in announcers {
        e.handle_message(*peer, Message::Update { entries: vec![large()] });
    }
    let cmds = e.take_commands();
    (e, cmds)
}

/// The pieces asked for in `cmds`, by peer.
fn asked(cmds: &[Command]) -> BTreeMap<NodeId, Vec<u64>> {
    let mut out: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
    for c in cmds {
        if let Command::Send {
            peer,
            msg: Message::PieceWant { index, .. },
        } = c
        {
            out.entry(*peer).or_default().push(*index);
        }
    }
    out
}

/// `peer` delivers piece `index` with the value `value`.
fn deliver(e: &mut Engine, peer: NodeId, index: u64, value: PieceValue) -> Vec<Command> {
    let entry = large();
    let (start, len) = Layout::new(entry.size, PIECE).unwrap().range(index).unwrap();
    assert_eq!(
        e.handle_piece(peer, &entry.path, entry.hash, index, 0, len),
        PieceFrame::Write { start, piece_len: len }
    );
    e.handle_piece_done(peer, &entry.path, index, PieceArrival::Value(value));
    e.take_commands()
}

#[test]
fn a_large_file_is_fetched_in_pieces_from_every_holder() {
    let entry = large();
    let vals = values(&content());
    let (mut e, cmds) = swarming(&[A, B], &[A]);
    assert_eq!(
        cmds,
        vec![
            Command::StartPieces {
                entry: entry.clone(),
                expected: None
            },
            Command::Send {
                peer: A,
                msg: Message::PieceMapWant {
                    path: entry.path.clone(),
                    hash: entry.hash
                }
            },
        ]
    );
    // B, receiving the file too, holds pieces 0 to 3 already.
    e.handle_message(
        B,
        Message::Have {
            path: entry.path.clone(),
            hash: entry.hash,
            pieces: vec![0b0000_1111],
        },
    );
    assert!(asked(&e.take_commands()).is_empty(), "nothing is asked before the map");
    // With the map, A (the source) is asked for one piece B cannot pass
    // on, and B for two of the others.
    e.handle_message(A, map_msg(&entry, &vals));
    let asks = asked(&e.take_commands());
    let first: BTreeMap<NodeId, Vec<u64>> = asks.iter().filter(|(p, _)| **p == A).map(|(p, v)| (*p, v.clone())).collect();
    let second: BTreeMap<NodeId, Vec<u64>> = asks.iter().filter(|(p, _)| **p == B).map(|(p, v)| (*p, v.clone())).collect();
    assert_eq!(first[&A], vec![4]);
    assert_eq!(PIECES_PER_SOURCE, 1);
    let from_b = &second[&B];
    assert_eq!(from_b.len(), PIECES_PER_PEER);
    assert!(from_b.iter().all(|i| *i < 4), "{from_b:?}");
    // Each verified piece is announced to every peer; from now on A, the
    // source, is asked only for what B cannot pass on (piece 4); the last
    // piece finishes the file.
    let mut outstanding: Vec<(NodeId, u64)> = first
        .into_iter()
        .chain(second)
        .flat_map(|(p, v)| v.into_iter().map(move |i| (p, i)))
        .collect();
    let mut finished = None;
    let mut delivered = BTreeSet::new();
    while let Some((peer, i)) = outstanding.pop() {
        let cmds = deliver(&mut e, peer, i, vals[i as usize]);
        delivered.insert(i);
        let haves = cmds
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Send {
                        msg: Message::Have { .. },
                        ..
                    }
                )
            })
            .count();
        assert_eq!(haves, 2, "{cmds:?}");
        for (p, pieces) in asked(&cmds) {
            assert!(p == B || pieces.iter().all(|i| *i == 4), "A asked for {pieces:?}, which B holds");
            outstanding.extend(pieces.into_iter().map(|i| (p, i)));
        }
        finished = finished.or(cmds.into_iter().find(|c| matches!(c, Command::FinishPieces { .. })));
    }
    assert_eq!(delivered.len(), 5);
    assert!(matches!(finished, Some(Command::FinishPieces { peer: _, path }) if path == entry.path));
    // Installed: every peer hears of it (B has not got it yet), and the
    // swarm ends.
    e.handle_received(A, entry.clone(), Transfer::Full, Ok(entry.size));
    let cmds = e.take_commands();
    for peer in [A, B] {
        assert!(cmds.contains(&Command::Send {
            peer,
            msg: Message::Update {
                entries: vec![entry.clone()]
            }
        }));
    }
    assert!(cmds.contains(&Command::EndPieces { path: entry.path.clone() }));
}

#[test]
fn receivers_ask_for_pieces_in_different_orders() {
    let entry = large();
    let vals = values(&content());
    let mut orders = BTreeSet::new();
    for k in 1..6u64 {
        let me = NodeId(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut e = Engine::new(me, Index::default()).with_piece_size(PIECE);
        connect(&mut e, A);
        e.handle_message(
            A,
            Message::Update {
                entries: vec![entry.clone()],
            },
        );
        e.handle_message(A, map_msg(&entry, &vals));
        orders.insert(asked(&e.take_commands())[&A].clone());
    }
    assert!(orders.len() >= 3, "five receivers, {} orders: {orders:?}", orders.len());
}

#[test]
fn a_bad_piece_is_asked_elsewhere_and_its_sender_dropped_after_three() {
    let entry = large();
    let vals = values(&content());
    let (mut e, _) = swarming(&[A, B], &[A, B]);
    e.handle_message(A, map_msg(&entry, &vals));
    let first = asked(&e.take_commands());
    let mut of_a = first[&A].clone();
    let mut of_b = first[&B].clone();
    let mut bad = BTreeSet::new();
    for sent_bad in 1..=MAX_BAD_FROM_PEER {
        let i = of_a.remove(0);
        bad.insert(i);
        let cmds = deliver(&mut e, A, i, [0xAA; 32]);
        let closes = cmds.iter().filter(|c| matches!(c, Command::Close { peer: A, .. })).count();
        assert_eq!(closes, usize::from(sent_bad == MAX_BAD_FROM_PEER), "bad piece {sent_bad}: {cmds:?}");
        // A is never asked again for a piece it sent bad; B is, for it.
        let mut asks = asked(&cmds);
        let again = asks.remove(&A).unwrap_or_default();
        assert!(again.iter().all(|p| !bad.contains(p)), "{again:?} after {bad:?}");
        of_a.extend(again);
        of_b.extend(asks.remove(&B).unwrap_or_default());
    }
    assert_eq!(e.piece_counts(), (0, u64::from(MAX_BAD_FROM_PEER)));
    e.handle_disconnected(A);
    of_b.extend(asked(&e.take_commands()).remove(&B).unwrap_or_default());
    // B delivers everything, the bad pieces too.
    let mut finished = false;
    while let Some(i) = of_b.pop() {
        let cmds = deliver(&mut e, B, i, vals[i as usize]);
        finished |= cmds.iter().any(|c| matches!(c, Command::FinishPieces { .. }));
        let next = asked(&cmds);
        assert!(!next.contains_key(&A), "A asked again: {next:?}");
        of_b.extend(next.get(&B).cloned().unwrap_or_default());
    }
    assert!(finished);
    assert_eq!(e.piece_counts(), (5, u64::from(MAX_BAD_FROM_PEER)));
}

#[test]
fn a_map_that_does_not_match_the_hash_is_refused_and_asked_elsewhere() {
    let entry = large();
    let mut vals = values(&content());
    let (mut e, _) = swarming(&[A, B], &[A, B]);
    vals[2][0] ^= 1;
    e.handle_message(A, map_msg(&entry, &vals));
    assert_eq!(
        e.take_commands(),
        vec![Command::Send {
            peer: B,
            msg: Message::PieceMapWant {
                path: entry.path.clone(),
                hash: entry.hash
            }
        }]
    );
    assert_eq!(e.piece_counts(), (0, 1));
}

#[test]
fn a_late_piece_is_asked_of_another_holder_but_kept_with_the_only_one() {
    let entry = large();
    let vals = values(&content());
    // Only A holds the file: a late piece stays asked of A (four at a time,
    // no other receiver being known).
    let (mut e, _) = swarming(&[A], &[A]);
    e.handle_message(A, map_msg(&entry, &vals));
    assert_eq!(asked(&e.take_commands())[&A].len(), PIECES_PER_LONE_SOURCE);
    e.handle_tick(31 * S);
    assert!(asked(&e.take_commands()).is_empty());
    // With B holding it too, A's late pieces go to B.
    let (mut e, _) = swarming(&[A, B], &[A]);
    e.handle_message(A, map_msg(&entry, &vals));
    let of_a = asked(&e.take_commands())[&A].clone();
    e.handle_message(
        B,
        Message::Update {
            entries: vec![entry.clone()],
        },
    );
    let of_b = asked(&e.take_commands()).get(&B).cloned().unwrap_or_default();
    e.handle_tick(31 * S);
    let again = asked(&e.take_commands());
    let to_b = again.get(&B).cloned().unwrap_or_default();
    assert!(
        !to_b.is_empty() && to_b.iter().all(|i| of_a.contains(i)),
        "late at A: {of_a:?}, asked again: {again:?} (B had {of_b:?})"
    );
    // A may take what B was late with, never what it was late with itself.
    assert!(again.get(&A).is_none_or(|v| v.iter().all(|i| !of_a.contains(i))), "{again:?}");
}

#[test]
fn the_source_leaving_leaves_the_file_to_the_partial_holders() {
    let entry = large();
    let vals = values(&content());
    let (mut e, _) = swarming(&[A, B, C], &[A]);
    e.handle_message(A, map_msg(&entry, &vals));
    e.take_commands();
    // B holds pieces 0-2, C holds 3-4: together, all of them.
    for (peer, bits) in [(B, 0b0000_0111u8), (C, 0b0001_1000)] {
        e.handle_message(
            peer,
            Message::Have {
                path: entry.path.clone(),
                hash: entry.hash,
                pieces: vec![bits],
            },
        );
    }
    let mut outstanding: Vec<(NodeId, u64)> = asked(&e.take_commands())
        .into_iter()
        .flat_map(|(p, v)| v.into_iter().map(move |i| (p, i)))
        .collect();
    e.handle_disconnected(A);
    let cmds = e.take_commands();
    assert!(!cmds.iter().any(|c| matches!(c, Command::EndPieces { .. })), "{cmds:?}");
    outstanding.extend(asked(&cmds).into_iter().flat_map(|(p, v)| v.into_iter().map(move |i| (p, i))));
    // Every piece is asked of whichever of B and C holds it, and the file
    // is finished without A.
    let mut finished = false;
    while let Some((peer, i)) = outstanding.pop() {
        assert!((peer == B && i < 3) || (peer == C && i >= 3), "{peer} asked for {i}");
        let cmds = deliver(&mut e, peer, i, vals[i as usize]);
        finished |= cmds.iter().any(|c| matches!(c, Command::FinishPieces { .. }));
        outstanding.extend(asked(&cmds).into_iter().flat_map(|(p, v)| v.into_iter().map(move |i| (p, i))));
    }
    assert!(finished);
}

#[test]
fn pieces_no_one_holds_give_the_swarm_up_until_a_source_returns() {
    let entry = large();
    let vals = values(&content());
    let (mut e, _) = swarming(&[A, B], &[A]);
    // B holds piece 2: it is asked for it, A (the source) for another.
    e.handle_message(
        B,
        Message::Have {
            path: entry.path.clone(),
            hash: entry.hash,
            pieces: vec![0b0000_0100],
        },
    );
    e.handle_message(A, map_msg(&entry, &vals));
    let asks = asked(&e.take_commands());
    assert_eq!(asks[&B], vec![2]);
    assert!(asks[&A].iter().all(|i| *i != 2));
    e.handle_disconnected(A);
    // Then no one holds the rest.
    let cmds = deliver(&mut e, B, 2, vals[2]);
    assert!(cmds.contains(&Command::EndPieces { path: entry.path.clone() }), "{cmds:?}");
    assert_eq!(e.retrying().len(), 1);
}

#[test]
fn pieces_and_maps_are_served_from_our_copy_or_our_temp_file() {
    let entry = large();
    let vals = values(&content());
    let other = file("other.bin", 5 * S, &vec![1u8; 3 * PIECE as usize]);
    let mut e = engine_with(std::slice::from_ref(&other)).with_piece_size(PIECE);
    connect(&mut e, A);
    connect(&mut e, B);
    e.take_commands();
    let want = |path: &RelPath, hash, index| Message::PieceWant {
        path: path.clone(),
        hash,
        index,
    };
    e.handle_message(B, want(&other.path, other.hash, 2));
    e.handle_message(
        B,
        Message::PieceMapWant {
            path: other.path.clone(),
            hash: other.hash,
        },
    );
    assert_eq!(
        e.take_commands(),
        vec![
            Command::SendPiece {
                peer: B,
                entry: other.clone(),
                index: 2,
                offset: 2 * PIECE,
                len: PIECE,
                from_temp: false
            },
            Command::SendPieceMap {
                peer: B,
                entry: other.clone(),
                piece_size: PIECE
            },
        ]
    );
    // A file we are receiving: its map, and the pieces we hold.
    e.handle_message(
        A,
        Message::Update {
            entries: vec![entry.clone()],
        },
    );
    e.handle_message(A, map_msg(&entry, &vals));
    let i = asked(&e.take_commands())[&A][0];
    deliver(&mut e, A, i, vals[i as usize]);
    let missing = (i + 1) % 5;
    e.handle_message(B, want(&entry.path, entry.hash, i));
    e.handle_message(B, want(&entry.path, entry.hash, missing));
    e.handle_message(
        B,
        Message::PieceMapWant {
            path: entry.path.clone(),
            hash: entry.hash,
        },
    );
    let (start, len) = Layout::new(entry.size, PIECE).unwrap().range(i).unwrap();
    assert_eq!(
        e.take_commands(),
        vec![
            Command::SendPiece {
                peer: B,
                entry: entry.clone(),
                index: i,
                offset: start,
                len,
                from_temp: true
            },
            Command::Send {
                peer: B,
                msg: Message::Unavailable { path: entry.path.clone() }
            },
            Command::Send {
                peer: B,
                msg: map_msg(&entry, &vals)
            },
        ]
    );
}

#[test]
fn a_newer_version_ends_the_swarm_and_late_pieces_are_dropped() {
    let entry = large();
    let vals = values(&content());
    let (mut e, _) = swarming(&[A], &[A]);
    e.handle_message(A, map_msg(&entry, &vals));
    let i = asked(&e.take_commands())[&A][0];
    let newer = file("video.bin", 9 * S, b"short now");
    e.handle_message(
        A,
        Message::Update {
            entries: vec![newer.clone()],
        },
    );
    let cmds = e.take_commands();
    assert!(cmds.contains(&Command::EndPieces { path: entry.path.clone() }), "{cmds:?}");
    assert_eq!(e.handle_piece(A, &entry.path, entry.hash, i, 0, 10), PieceFrame::Drop);
    // Bytes beyond a piece break the protocol.
    let (mut e, _) = swarming(&[A], &[A]);
    e.handle_message(A, map_msg(&entry, &vals));
    let i = asked(&e.take_commands())[&A][0];
    assert_eq!(e.handle_piece(A, &entry.path, entry.hash, i, PIECE - 1, 2), PieceFrame::Drop);
    assert!(matches!(e.take_commands().as_slice(), [Command::Close { peer: A, .. }]));
}

/// One thing that happens around a swarm (the generator below).
#[derive(Debug, Clone)]
enum Event {
    /// The peer announces it holds the file whole.
    Announce(usize),
    /// The peer says which pieces it holds.
    Have(usize, u8),
    /// The oldest piece asked of the peer arrives, good or bad.
    Deliver(usize, bool),
    Disconnect(usize),
    Reconnect(usize),
    /// 31 s pass.
    Late,
}

fn event() -> impl proptest::strategy::Strategy<Value = Event> {
    use proptest::prelude::*;
    prop_oneof![
        (0..3usize).prop_map(Event::Announce),
        (0..3usize, any::<u8>()).prop_map(|(p, b)| Event::Have(p, b)),
        (0..3usize, proptest::bool::weighted(0.9)).prop_map(|(p, g)| Event::Deliver(p, g)),
        (0..3usize).prop_map(Event::Disconnect),
        (0..3usize).prop_map(Event::Reconnect),
        Just(Event::Late),
    ]
}

proptest::proptest! {
    /// Whatever peers come, go, announce, lie or lag, a swarm never hangs:
    /// it asks someone for something, or no one it may ask holds what it
    /// lacks. (A swarm once stopped asking a receiver that had finished
    /// the file: found by the simulation, keyed seed 11000034.)
    #[test]
    fn a_swarm_always_asks_someone_who_holds_what_it_lacks(events in proptest::collection::vec(event(), 1..40)) {
        let peers = [A, B, C];
        let entry = large();
        let vals = values(&content());
        let (mut e, _) = swarming(&peers, &[A]);
        e.handle_message(A, map_msg(&entry, &vals));
        let mut outstanding: Vec<(NodeId, u64)> = asked(&e.take_commands()).into_iter().flat_map(|(p, v)| v.into_iter().map(move |i| (p, i))).collect();
        let mut clock = 0;
        for ev in events {
            let cmds = match ev {
                Event::Announce(p) => {
                    e.handle_message(peers[p], Message::Update { entries: vec![entry.clone()] });
                    e.take_commands()
                }
                Event::Have(p, bits) => {
                    e.handle_message(peers[p], Message::Have { path: entry.path.clone(), hash: entry.hash, pieces: vec![bits] });
                    e.take_commands()
                }
                Event::Deliver(p, good) => match outstanding.iter().position(|(q, _)| *q == peers[p]) {
                    Some(k) => {
                        let (peer, i) = outstanding.remove(k);
                        let value = if good { vals[i as usize] } else { [0; 32] };
                        let (start, len) = Layout::new(entry.size, PIECE).unwrap().range(i).unwrap();
                        if e.handle_piece(peer, &entry.path, entry.hash, i, 0, len) == (PieceFrame::Write { start, piece_len: len }) {
                            e.handle_piece_done(peer, &entry.path, i, PieceArrival::Value(value));
                        }
                        e.take_commands()
                    }
                    None => continue,
                },
                Event::Disconnect(p) => {
                    e.handle_disconnected(peers[p]);
                    outstanding.retain(|(q, _)| *q != peers[p]);
                    e.take_commands()
                }
                Event::Reconnect(p) => {
                    if e.peers.contains_key(&peers[p]) {
                        continue;
                    }
                    connect(&mut e, peers[p]);
                    e.take_commands()
                }
                Event::Late => {
                    clock += 31 * S;
                    e.handle_tick(clock);
                    e.take_commands()
                }
            };
            outstanding.extend(asked(&cmds).into_iter().flat_map(|(p, v)| v.into_iter().map(move |i| (p, i))));
            if let Some(ok) = e.swarm_progresses(&entry.path) {
                proptest::prop_assert!(ok, "the swarm hangs after {:?}", ev);
            }
        }
    }
}

/// Issue 26, item 7: a sparse file sent its holes as bytes (4.83 GB on the
/// wire for 2 MiB of data). Pieces the map names as zeros (checked by the
/// node against their values) are never asked for, and the file is done
/// when the others are here; a map of nothing but zeros is done at once.
#[test]
fn pieces_of_zeros_are_not_asked_for() {
    let entry = large();
    let vals = values(&content());
    let (mut e, _) = swarming(&[A], &[A]);
    let with_zeros = |zeros: Vec<(u64, u64)>| match map_msg(&entry, &vals) {
        Message::PieceMap {
            path,
            hash,
            piece_size,
            values,
            ..
        } => Message::PieceMap {
            path,
            hash,
            piece_size,
            values,
            zeros,
        },
        other => other,
    };
    e.handle_message(A, with_zeros(vec![(1, 3)]));
    assert_eq!(asked(&e.take_commands()), BTreeMap::from([(A, vec![0, 3, 4])]));
    deliver(&mut e, A, 0, vals[0]);
    deliver(&mut e, A, 3, vals[3]);
    let cmds = deliver(&mut e, A, 4, vals[4]);
    assert!(
        cmds.contains(&Command::FinishPieces {
            path: entry.path.clone(),
            peer: A
        }),
        "{cmds:?}"
    );

    // All zeros: nothing to ask, done at once.
    let (mut e, _) = swarming(&[A], &[A]);
    e.handle_message(A, with_zeros(vec![(0, 5)]));
    let cmds = e.take_commands();
    assert!(asked(&cmds).is_empty(), "{cmds:?}");
    assert!(cmds.contains(&Command::FinishPieces {
        path: entry.path.clone(),
        peer: A
    }));

    // Zeros beyond the file, or named twice: the map is refused.
    for bad in [vec![(3, 6)], vec![(0, 2), (1, 3)]] {
        let (mut e, _) = swarming(&[A], &[A]);
        e.handle_message(A, with_zeros(bad.clone()));
        assert!(asked(&e.take_commands()).is_empty(), "{bad:?} taken");
    }
}

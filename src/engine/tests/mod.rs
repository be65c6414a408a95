//! Engine tests: inputs in, exact commands out. No sockets, no clock.
//! Here: peers, wants and local changes; conflicts, ignore rules and
//! received content in the files beside.

use super::*;
use crate::wire::{ContentMode, Message, Vector, WantFile};

const ME: NodeId = NodeId(10);
const A: NodeId = NodeId(20);
const B: NodeId = NodeId(30);
/// One second, in the engine's nanoseconds.
const S: i128 = 1_000_000_000;
/// The device that made the versions the helpers below build: one history,
/// so a later version descends from an earlier one (sequential edits).
const HIST: NodeId = NodeId(99);

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn file(path: &str, t: i128, content: &[u8]) -> Entry {
    Entry {
        path: p(path),
        kind: Kind::File,
        deleted: false,
        size: content.len() as u64,
        mtime: t,
        version: t,
        hash: Hash::of(content),
        vector: Vector::single(HIST, t as u64),
        by: HIST,
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    }
}

fn big(path: &str, t: i128, seed: u8) -> Entry {
    Entry {
        size: DELTA_MIN_SIZE * 2,
        ..file(path, t, &[seed])
    }
}

fn dir(path: &str, t: i128) -> Entry {
    Entry {
        path: p(path),
        kind: Kind::Dir,
        deleted: false,
        size: 0,
        mtime: t,
        version: t,
        hash: Hash::ZERO,
        vector: Vector::single(HIST, t as u64),
        by: HIST,
        exec: false,
        mode: 0,
        target: None,
        xattrs: None,
    }
}

fn tomb(path: &str, t: i128) -> Entry {
    Entry {
        deleted: true,
        size: 0,
        hash: Hash::ZERO,
        ..file(path, t, b"")
    }
}

/// `e` as this engine records it when made locally over `old`.
fn by_me(old: Option<&Entry>, e: Entry) -> Entry {
    let vector = old.map(|o| o.vector.clone()).unwrap_or_default().bump(ME, e.version);
    Entry { vector, by: ME, ..e }
}

fn observed(e: &Entry) -> Observed {
    Observed {
        path: e.path.clone(),
        kind: e.kind,
        size: e.size,
        mtime: e.mtime,
        hash: e.hash,
        occupied: false,
        exec: e.exec,
        mode: e.mode,
        target: e.target.clone(),
        xattrs: None,
        stat: None,
    }
}

/// A look at the disk (`handle_local`) made twice, `DELETE_HOLD` apart and
/// the second at `now`: what it finds gone travels only with the second
/// (a deletion waits for a look that still finds DIR with its marker).
fn look_and_confirm(e: &mut Engine, now: i128, roots: &[Option<RelPath>], found: Vec<Observed>) {
    e.handle_local(now - crate::engine::repair::DELETE_HOLD, roots, found.clone());
    e.handle_local(now, roots, found);
}

/// `handle_scan`, twice in the same way.
fn scan_and_confirm(e: &mut Engine, now: i128, scan: Scan) {
    e.handle_scan(now - crate::engine::repair::DELETE_HOLD, scan.clone());
    e.handle_scan(now, scan);
}

fn engine_with(entries: &[Entry]) -> Engine {
    let mut index = Index::default();
    for e in entries {
        index.insert(e.clone());
    }
    Engine::new(ME, index)
}

/// What a look that changed the index asks for: a commit first, then
/// `cmds` (what it announces).
fn saved(cmds: Vec<Command>) -> Vec<Command> {
    std::iter::once(Command::SaveIndex).chain(cmds).collect()
}

/// Time passes to `t`: the commands that follow, but the digest every
/// peer is told each tick.
fn tick(e: &mut Engine, t: i128) -> Vec<Command> {
    e.handle_tick(t);
    e.take_commands()
        .into_iter()
        .filter(|c| {
            !matches!(
                c,
                Command::Send {
                    msg: Message::TreeDigest { .. },
                    ..
                }
            )
        })
        .collect()
}

/// `peer` connects, asks for our whole index and sends its own, empty
/// (its device id is its node id, in these tests): what it sends next is
/// live.
fn connect(e: &mut Engine, peer: NodeId) {
    connect_before_its_index(e, peer);
    e.handle_message(peer, index_msg(vec![]));
}

/// `peer` connects and asks for our whole index; its own is still to come.
fn connect_before_its_index(e: &mut Engine, peer: NodeId) {
    e.handle_connected(peer, peer, crate::wire::PROTOCOL_VERSION);
    e.handle_message(peer, Message::IndexRequest { identity: 0, since: 0 });
}

/// An engine connected to `peers` whose own index has been sent.
fn connected(entries: &[Entry], peers: &[NodeId]) -> Engine {
    let mut e = engine_with(entries);
    for peer in peers {
        connect(&mut e, *peer);
    }
    e.take_commands();
    e
}

/// What a peer asking for our whole index gets: the head, then the parts.
fn whole_index(e: &Engine, peer: NodeId, entries: Vec<Entry>) -> Vec<Command> {
    let head = Message::IndexHead {
        identity: e.exchange_identity(crate::wire::PROTOCOL_VERSION),
        since: 0,
        seq: e.index().seq(),
    };
    vec![
        Command::Send { peer, msg: head },
        Command::Send {
            peer,
            msg: index_msg(entries),
        },
    ]
}

fn index_msg(entries: Vec<Entry>) -> Message {
    Message::Index { entries, done: true }
}

/// A want of `files` as a peer speaking this version is sent it.
fn want(peer: NodeId, files: &[&Entry]) -> Command {
    Command::Send {
        peer,
        msg: Message::Want {
            files: files
                .iter()
                .map(|e| WantFile {
                    path: e.path.clone(),
                    hash: crate::wire::WantedHash::from(e.hash).short(),
                })
                .collect(),
        },
    }
}

/// The disk change `action`, for `peer`'s version.
fn apply(peer: NodeId, action: Action) -> Command {
    Command::Apply { peer, action }
}

/// The messages `cmds` send to `peer`, in order.
fn sent_to(cmds: &[Command], peer: NodeId) -> impl Iterator<Item = &Message> {
    cmds.iter().filter_map(move |c| match c {
        Command::Send { peer: to, msg } if *to == peer => Some(msg),
        _ => None,
    })
}

fn update(peer: NodeId, entries: Vec<Entry>) -> Command {
    Command::Send {
        peer,
        msg: Message::Update { entries },
    }
}

#[test]
fn connect_asks_for_the_peers_index_and_a_new_peer_gets_the_whole_of_ours_even_when_empty() {
    let mut e = engine_with(&[]);
    e.handle_connected(A, A, crate::wire::PROTOCOL_VERSION);
    let ask_all = Message::IndexRequest { identity: 0, since: 0 };
    assert_eq!(
        e.take_commands(),
        vec![Command::Send {
            peer: A,
            msg: ask_all.clone()
        }]
    );
    e.handle_message(A, ask_all.clone());
    assert_eq!(e.take_commands(), whole_index(&e, A, vec![]));
    let f = file("a", 1, b"x");
    let mut e = engine_with(std::slice::from_ref(&f));
    e.handle_connected(A, A, crate::wire::PROTOCOL_VERSION);
    e.handle_message(A, ask_all);
    assert_eq!(e.take_commands()[1..], whole_index(&e, A, vec![f]));
}

#[test]
fn a_peers_new_files_are_wanted_in_one_batch_and_folders_made_first() {
    let mut e = engine_with(&[]);
    connect_before_its_index(&mut e, A);
    e.take_commands();
    let (f1, f2, d) = (file("d/x", 5, b"1"), file("y", 5, b"2"), dir("d", 4));
    e.handle_message(A, index_msg(vec![f2.clone(), f1.clone(), d.clone()]));
    assert_eq!(
        e.take_commands(),
        vec![
            Command::Apply {
                peer: A,
                action: Action::MakeDir {
                    entry: d.clone(),
                    local: None
                }
            },
            want(A, &[&f1, &f2])
        ]
    );
    assert_eq!(e.pending(), 2);
    // Nothing is synchronized until the files arrive.
    assert_eq!(e.peers().collect::<Vec<_>>(), vec![(A, false)]);
    e.handle_action_done(A, Action::MakeDir { entry: d, local: None }, Ok(()));
    for f in [&f1, &f2] {
        assert!(e.content_wanted(A, f).is_ok());
        e.handle_received(A, f.clone(), Transfer::Full, Ok(10));
    }
    assert_eq!(e.pending(), 0);
    assert_eq!(e.peers().collect::<Vec<_>>(), vec![(A, true)]);
    assert_eq!(e.index().live(&p("d/x")), Some(f1.clone()));
}

#[test]
fn wants_ask_for_small_files_before_large_ones() {
    let mut e = connected(&[], &[A]);
    let (large, small, mid) = (file("a", 5, &[1; 3000]), file("b", 5, b"1"), file("c", 5, &[2; 200]));
    let (tiny_too, also_small) = (file("d", 5, b"2"), file("e", 5, b"3"));
    e.handle_message(
        A,
        index_msg(vec![
            large.clone(),
            small.clone(),
            mid.clone(),
            tiny_too.clone(),
            also_small.clone(),
        ]),
    );
    // Equal sizes keep path order.
    assert_eq!(e.take_commands(), vec![want(A, &[&small, &tiny_too, &also_small, &mid, &large])]);
}

#[test]
fn older_or_equal_versions_change_nothing() {
    let mine = file("a", 10, b"new");
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    e.handle_message(A, index_msg(vec![file("a", 9, b"old"), mine.clone(), tomb("a", 3)]));
    assert_eq!(e.take_commands(), vec![]);
    assert_eq!(e.peers().collect::<Vec<_>>(), vec![(A, true)]);
}

#[test]
fn a_newer_tombstone_deletes_and_an_unknown_one_is_remembered() {
    let mine = file("a", 10, b"x");
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    let (ta, tb) = (tomb("a", 11), tomb("never-had", 11));
    e.handle_message(A, index_msg(vec![ta.clone(), tb.clone()]));
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::Delete {
                entry: ta.clone(),
                local: mine
            }
        }]
    );
    assert_eq!(e.index().get(&tb.path), Some(tb.clone()));
}

#[test]
fn same_content_with_another_mtime_is_a_touch_not_a_transfer() {
    let mine = file("a", 10, b"same");
    let theirs = file("a", 12, b"same");
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::SetMtime {
                entry: theirs,
                local: mine
            }
        }]
    );
}

#[test]
fn a_rename_moves_local_content_instead_of_transferring_it() {
    let old = file("old/name.txt", 10, b"content");
    let mut e = connected(&[old.clone(), file("other", 1, b"o")], &[A, B]);
    let gone = tomb("old/name.txt", 20);
    let new = file("new/name.txt", 10, b"content");
    e.handle_message(
        A,
        Message::Update {
            entries: vec![gone.clone(), new.clone()],
        },
    );
    let rename = Action::Rename {
        from: old,
        from_tombstone: gone.clone(),
        entry: new.clone(),
        local: None,
    };
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: rename.clone()
        }]
    );
    e.handle_action_done(A, rename, Ok(()));
    // Both halves are recorded and passed on to the other peer, in one
    // message.
    assert_eq!(e.take_commands(), vec![update(B, vec![gone.clone(), new.clone()])]);
    assert_eq!(e.index().get(&gone.path), Some(gone.clone()));
    assert_eq!(e.index().live(&new.path), Some(new.clone()));
}

#[test]
fn a_copy_of_local_content_needs_no_transfer() {
    let src = file("a", 10, b"content");
    let mut e = connected(std::slice::from_ref(&src), &[A]);
    let copy = file("b", 12, b"content");
    e.handle_message(
        A,
        Message::Update {
            entries: vec![copy.clone()],
        },
    );
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::Copy {
                from: src,
                entry: copy,
                local: None
            }
        }]
    );
}

#[test]
fn a_big_older_copy_asks_for_a_delta_and_falls_back_to_whole() {
    let mine = big("v.bin", 10, 1);
    let theirs = big("v.bin", 20, 2);
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    e.handle_message(
        A,
        Message::Update {
            entries: vec![theirs.clone()],
        },
    );
    assert_eq!(
        e.take_commands(),
        vec![Command::RequestDelta {
            peer: A,
            want: theirs.clone(),
            base: mine
        }]
    );
    // The delta did not rebuild the announced file: ask for the whole file.
    // The disk is looked at again in any case.
    let rescan = Command::Rescan {
        paths: vec![theirs.path.clone()],
    };
    e.handle_received(A, theirs.clone(), Transfer::Delta, Err("hash mismatch".into()));
    assert_eq!(e.take_commands(), vec![rescan.clone(), want(A, &[&theirs])]);
    // A whole file failing too is tried again later, not forgotten
    // (issue 13, bug 6).
    e.handle_received(A, theirs.clone(), Transfer::Full, Err("hash mismatch".into()));
    assert_eq!(e.take_commands(), vec![rescan]);
    assert_eq!(e.pending(), 1);
    assert_eq!(e.retrying()[0].error, "hash mismatch");
}

/// An engine connected to A and B that heard `f` from both and asked A.
fn asked_of_a_also_at_b(f: &Entry) -> Engine {
    let mut e = connected(&[], &[A, B]);
    e.handle_message(A, Message::Update { entries: vec![f.clone()] });
    assert_eq!(e.take_commands(), vec![want(A, &[f])]);
    // B announces the same version: no second request.
    e.handle_message(B, Message::Update { entries: vec![f.clone()] });
    assert_eq!(e.take_commands(), vec![]);
    e
}

#[test]
fn one_source_per_file_and_failover_when_it_leaves() {
    let f = file("f", 5, b"x");
    let mut e = asked_of_a_also_at_b(&f);
    // A leaves before sending: ask B.
    e.handle_disconnected(A);
    assert_eq!(e.take_commands(), vec![want(B, &[&f])]);
    assert!(e.content_wanted(A, &f).is_err());
    assert!(e.content_wanted(B, &f).is_ok());
}

#[test]
fn received_files_are_passed_on_to_the_other_peers_only() {
    let mut e = connected(&[], &[A, B]);
    let f = file("f", 5, b"x");
    e.handle_message(A, Message::Update { entries: vec![f.clone()] });
    e.take_commands();
    e.handle_received(A, f.clone(), Transfer::Full, Ok(100));
    assert_eq!(e.take_commands(), vec![update(B, vec![f.clone()])]);
    assert_eq!(e.index().get(&f.path), Some(f));
}

/// What the node saw of a file it installed is what the next look
/// compares with: the watcher raises no look for our own installs.
#[test]
fn an_installed_files_stat_is_kept_for_the_next_look() {
    let mut e = connected(&[], &[A]);
    let f = file("f", 5, b"x");
    e.handle_message(A, Message::Update { entries: vec![f.clone()] });
    e.take_commands();
    e.handle_received(A, f.clone(), Transfer::Full, Ok(100));
    let stat = Stat { ino: 7, ctime: 9 };
    e.handle_installed(&f, stat);
    assert_eq!(e.index().known(&f.path).map(|(_, s)| s), Some(Some(stat)));
    // Not for another version than the index holds.
    e.handle_installed(&file("f", 6, b"y"), Stat { ino: 8, ctime: 9 });
    assert_eq!(e.index().known(&f.path).map(|(_, s)| s), Some(Some(stat)));
}

#[test]
fn unsolicited_content_is_refused() {
    let e = connected(&[], &[A]);
    assert!(e.content_wanted(A, &file("x", 1, b"x")).is_err());
}

#[test]
fn wants_are_served_only_for_the_version_held() {
    let f = file("a", 10, b"x");
    let mut e = connected(std::slice::from_ref(&f), &[A]);
    e.handle_message(
        A,
        Message::Want {
            files: vec![
                WantFile {
                    path: f.path.clone(),
                    hash: f.hash.into(),
                },
                WantFile {
                    path: f.path.clone(),
                    hash: Hash::of(b"old").into(),
                },
                // Protocol 7 names a version by its hash's first 8 bytes,
                // 8 by its first 4.
                WantFile {
                    path: f.path.clone(),
                    hash: crate::wire::WantedHash::from(f.hash).prefix(),
                },
                WantFile {
                    path: f.path.clone(),
                    hash: crate::wire::WantedHash::from(Hash::of(b"old")).prefix(),
                },
                WantFile {
                    path: f.path.clone(),
                    hash: crate::wire::WantedHash::from(f.hash).short(),
                },
                WantFile {
                    path: f.path.clone(),
                    hash: crate::wire::WantedHash::from(Hash::of(b"old")).short(),
                },
            ],
        },
    );
    let served = Command::SendContent {
        peer: A,
        entry: f.clone(),
        base: None,
    };
    let unavailable = Command::Send {
        peer: A,
        msg: Message::Unavailable { path: f.path.clone() },
    };
    assert_eq!(
        e.take_commands(),
        vec![
            served.clone(),
            unavailable.clone(),
            served.clone(),
            unavailable.clone(),
            served,
            unavailable
        ]
    );
    let sig = vec![1, 2, 3];
    e.handle_message(
        A,
        Message::WantDelta {
            path: f.path.clone(),
            hash: f.hash,
            base: Hash::of(b"b"),
            signature: sig.clone(),
        },
    );
    assert_eq!(
        e.take_commands(),
        vec![Command::SendContent {
            peer: A,
            entry: f,
            base: Some((Hash::of(b"b"), sig))
        }]
    );
}

/// Issue 24, case 4: the only peer holding a file cannot send it (it
/// cannot read it). The need is not dropped: it is tried again with
/// backoff, and shown as retrying. With another source, that one is asked.
#[test]
fn unavailable_asks_another_source_or_tries_again_later() {
    let mut e = connected(&[], &[A]);
    let f = file("f", 5, b"x");
    e.handle_message(A, Message::Update { entries: vec![f.clone()] });
    e.take_commands();
    e.handle_message(A, Message::Unavailable { path: f.path.clone() });
    assert_eq!(e.take_commands(), vec![]);
    assert_eq!(
        e.retrying().iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
        vec![f.path.clone()]
    );
    e.handle_tick(2 * S);
    assert_eq!(e.take_commands()[0], want(A, &[&f]), "asked again");
    let mut e = asked_of_a_also_at_b(&f);
    e.handle_message(A, Message::Unavailable { path: f.path.clone() });
    assert_eq!(e.take_commands(), vec![want(B, &[&f])]);
}

/// Found by the simulation (sim/, live_bursts): the peer changed the file
/// again before our want arrived, so it answers `Unavailable` for the old
/// version after announcing the new one; the new one is still wanted.
#[test]
fn unavailable_for_an_older_version_keeps_the_newer_need() {
    let mut e = connected(&[], &[A]);
    let v1 = file("f", 5, b"one");
    let v2 = file("f", 6, b"two");
    e.handle_message(A, Message::Update { entries: vec![v1.clone()] });
    assert_eq!(e.take_commands(), vec![want(A, &[&v1])]);
    e.handle_message(A, Message::Update { entries: vec![v2.clone()] });
    assert_eq!(e.take_commands(), vec![]);
    e.handle_message(A, Message::Unavailable { path: v1.path.clone() });
    assert_eq!(e.take_commands(), vec![want(A, &[&v2])]);
    assert_eq!(e.pending(), 1);
}

#[test]
fn a_second_hello_or_stray_content_closes_the_connection() {
    let mut e = connected(&[], &[A]);
    e.handle_message(
        A,
        Message::Hello {
            version: 1,
            node: A,
            listen_port: 1,
            device: A,
            features: vec![],
            newest: 0,
        },
    );
    e.handle_message(
        A,
        Message::FileStart {
            entry: file("x", 1, b"x"),
            content: ContentMode::Full,
        },
    );
    let cmds = e.take_commands();
    assert_eq!(cmds.len(), 2);
    assert!(cmds.iter().all(|c| matches!(c, Command::Close { peer, .. } if *peer == A)));
}

#[test]
fn two_nodes_pick_the_same_winner_for_equal_mtimes() {
    let one = file("f", 50, b"one");
    let two = file("f", 50, b"two");
    let mut x = connected(std::slice::from_ref(&one), &[A]);
    let mut y = connected(std::slice::from_ref(&two), &[A]);
    x.handle_message(
        A,
        Message::Update {
            entries: vec![two.clone()],
        },
    );
    y.handle_message(
        A,
        Message::Update {
            entries: vec![one.clone()],
        },
    );
    let x_wants = !x.take_commands().is_empty();
    let y_wants = !y.take_commands().is_empty();
    // Exactly one side takes the other's version.
    assert_ne!(x_wants, y_wants);
}

/// Found by the simulation (sim/, live_bursts and faults): content asked
/// for before a newer local change (or deletion) arrives after it; it must
/// not replace the newer version, and the path can be asked for again.
#[test]
fn content_asked_for_before_a_newer_local_change_is_refused() {
    for mine in [file("f", 6, b"mine"), tomb("f", 6)] {
        let mut e = connected(&[file("f", 1, b"old")], &[A]);
        let theirs = file("f", 5, b"theirs");
        e.handle_message(
            A,
            Message::Update {
                entries: vec![theirs.clone()],
            },
        );
        assert_eq!(e.take_commands(), vec![want(A, &[&theirs])]);
        let found = if mine.deleted { vec![] } else { vec![observed(&mine)] };
        look_and_confirm(&mut e, 6, &[Some(p("f"))], found);
        e.take_commands();
        assert!(e.content_wanted(A, &theirs).is_err(), "{mine:?}");
        // A newer version made after seeing ours.
        let seen = e.index().get(&p("f")).unwrap().vector.clone();
        let newer = Entry {
            vector: seen.bump(HIST, 7),
            ..file("f", 7, b"newer")
        };
        e.handle_message(
            A,
            Message::Update {
                entries: vec![newer.clone()],
            },
        );
        assert_eq!(e.take_commands(), vec![want(A, &[&newer])], "{mine:?}");
    }
}

// ----- data safety: version vectors, conflicts, tombstones, the guard ----

mod conflicts;
mod descent;
mod exchange;
mod exclude;
mod ignore;
mod local;
mod receive;
mod repair;
mod swarm;
mod unsent;
mod versions;
mod window;

#[test]
fn updates_to_a_peer_merge_until_something_else_goes_to_it() {
    let (x, y, z) = (file("x", 1, b"x"), file("y", 1, b"y"), file("z", 1, b"z"));
    let ping = |peer| Command::Send { peer, msg: Message::Ping };
    let merged = coalesce_updates(vec![
        update(A, vec![x.clone()]),
        update(B, vec![x.clone()]),
        update(A, vec![y.clone()]),
        ping(B),
        update(B, vec![y.clone()]),
        update(A, vec![z.clone()]),
        update(B, vec![z.clone()]),
    ]);
    assert_eq!(
        merged,
        vec![
            update(A, vec![x.clone(), y, z.clone()]),
            update(B, vec![x]),
            ping(B),
            update(B, vec![file("y", 1, b"y"), z]),
        ]
    );
    // Never past MAX_ENTRIES in one message.
    let many: Vec<Command> = (0..MAX_ENTRIES + 1)
        .map(|i| update(A, vec![file(&format!("f{i}"), 1, b"f")]))
        .collect();
    let merged = coalesce_updates(many);
    assert_eq!(merged.len(), 2);
}

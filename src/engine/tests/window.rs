//! Wants a window at a time per peer (`requests.rs`): spread over every
//! source of a file, in an order of each node's own.

use super::*;
use crate::engine::remote::OFFER_WAIT;
use crate::engine::requests::{SHARED_WINDOW_FILES, WINDOW_FILES};

/// `n` small files, as one index.
fn files(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| file(&format!("f{i:04}"), 5 * S, format!("content {i}").as_bytes()))
        .collect()
}

/// The paths asked of `peer` in `cmds`.
fn wanted(cmds: &[Command], peer: NodeId) -> Vec<RelPath> {
    sent_to(cmds, peer)
        .filter_map(|m| match m {
            Message::Want { files } => Some(files.iter().map(|f| f.path.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// `peer` sends the content of `e`, which we asked of it.
fn arrive(engine: &mut Engine, peer: NodeId, e: &Entry) -> Vec<Command> {
    assert!(matches!(engine.handle_file_start(peer, e), Receive::Write { .. }));
    assert!(matches!(engine.handle_file_end(peer), Receive::Write { .. }));
    engine.take_commands()
}

#[test]
fn a_peer_is_asked_a_window_at_a_time_and_more_once_half_has_arrived() {
    let all = files(600);
    let mut e = connected(&[], &[A]);
    e.handle_message(A, index_msg(all.clone()));
    let first = wanted(&e.take_commands(), A);
    assert_eq!(first.len() as u64, WINDOW_FILES);
    let by_path: BTreeMap<RelPath, Entry> = all.iter().map(|f| (f.path.clone(), f.clone())).collect();
    // Until half the window has arrived, nothing more is asked.
    for path in &first[..(WINDOW_FILES / 2 - 1) as usize] {
        assert!(wanted(&arrive(&mut e, A, &by_path[path]), A).is_empty());
    }
    let more = wanted(&arrive(&mut e, A, &by_path[&first[(WINDOW_FILES / 2 - 1) as usize]]), A);
    assert_eq!(more.len() as u64, WINDOW_FILES / 2, "the window is filled again");
    assert!(more.iter().all(|p| !first.contains(p)));
}

/// A file another connected peer lacks too is asked a few at a time (the
/// shared window), so that the rest goes to whichever peer has it by then:
/// one source is not asked for each file by every receiver at once.
#[test]
fn files_other_peers_lack_too_are_asked_a_few_at_a_time_and_then_of_whoever_has_them() {
    let all = files(600);
    let mut e = connected(&[], &[A, B]);
    e.handle_message(A, index_msg(all.clone()));
    let of_a = wanted(&e.take_commands(), A);
    assert_eq!(of_a.len() as u64, SHARED_WINDOW_FILES, "B lacks them too");
    // Nothing more while A owes that much.
    let by_path: BTreeMap<RelPath, Entry> = all.iter().map(|f| (f.path.clone(), f.clone())).collect();
    let more = wanted(&arrive(&mut e, A, &by_path[&of_a[0]]), A);
    assert_eq!(more.len(), 1, "one arrived, one more asked");
    // B announces the same versions (it has just received them): the rest
    // goes to B, which owes least, and to A, each up to its whole window,
    // none twice.
    e.handle_message(B, Message::Update { entries: all.clone() });
    let cmds = e.take_commands();
    let (then_of_a, of_b) = (wanted(&cmds, A), wanted(&cmds, B));
    assert_eq!(of_b.len() as u64, WINDOW_FILES);
    assert_eq!((of_a.len() - 1 + more.len() + then_of_a.len()) as u64, WINDOW_FILES);
    let asked: BTreeSet<&RelPath> = of_a.iter().chain(&more).chain(&then_of_a).chain(&of_b).collect();
    assert_eq!(asked.len(), of_a.len() + more.len() + then_of_a.len() + of_b.len());
}

#[test]
fn files_a_busy_source_cannot_take_go_to_another_source() {
    let all = files(300);
    let mut e = connected(&[], &[A]);
    e.handle_message(A, index_msg(all.clone()));
    let of_a = wanted(&e.take_commands(), A);
    assert_eq!(of_a.len() as u64, WINDOW_FILES);
    // B connects and announces the same versions (it has just received
    // them): the files A has no room for are asked of B, none twice.
    connect(&mut e, B);
    e.take_commands();
    e.handle_message(B, Message::Update { entries: all.clone() });
    let of_b = wanted(&e.take_commands(), B);
    assert_eq!(of_b.len() as u64, 300 - WINDOW_FILES);
    assert!(of_b.iter().all(|p| !of_a.contains(p)));
    // A leaves: what it owed goes to B, as far as B's window reaches.
    e.handle_disconnected(A);
    let again = wanted(&e.take_commands(), B);
    assert_eq!(again.len() as u64, WINDOW_FILES - of_b.len() as u64);
    assert!(again.iter().all(|p| of_a.contains(p)));
}

#[test]
fn receivers_of_one_batch_ask_for_it_in_different_orders() {
    let all = files(1000);
    let firsts: BTreeSet<Vec<RelPath>> = [NodeId(1), NodeId(2), NodeId(3)]
        .into_iter()
        .map(|me| {
            let mut e = Engine::new(me, Index::default());
            connect(&mut e, A);
            e.take_commands();
            e.handle_message(A, index_msg(all.clone()));
            let mut w = wanted(&e.take_commands(), A);
            w.sort();
            w
        })
        .collect();
    assert_eq!(firsts.len(), 3, "three receivers asked for the same first window");
}

/// A window that opens takes what waits for it as far as it has room:
/// putting every waiting need back into `to_schedule` each time cost
/// O(needs) per half window received, quadratic over a first sync (issue
/// 27: ~10% of the receiver's CPU at 20,000 files, more at 200,000).
#[test]
fn an_opening_window_looks_only_at_what_it_takes() {
    let all = files(5_000);
    let mut e = connected(&[], &[A]);
    e.handle_message(A, index_msg(all.clone()));
    let first = wanted(&e.take_commands(), A);
    let by_path: BTreeMap<RelPath, Entry> = all.iter().map(|f| (f.path.clone(), f.clone())).collect();
    let before = e.wants.looked_at;
    let mut asked = 0;
    for path in &first[..(WINDOW_FILES / 2) as usize] {
        asked += wanted(&arrive(&mut e, A, &by_path[path]), A).len() as u64;
    }
    assert_eq!(asked, WINDOW_FILES / 2, "the window is filled again");
    let looked = e.wants.looked_at - before;
    assert!(looked <= 2 * WINDOW_FILES, "{looked} needs looked at to ask for {asked}");
}

/// Of a batch that one source holds and four other receivers lack too,
/// this node first asks the source only for the files it is first to
/// fetch (by the rendezvous of `schedule_order`); while the source owes it
/// those, the rest waits for a receiver to offer it, and is asked of the
/// source after a while or once the source owes this node nothing.
#[test]
fn of_a_batch_other_receivers_lack_each_asks_the_source_for_its_own_share() {
    let all = files(150);
    let (source, others) = (NodeId(100), [NodeId(101), NodeId(102), NodeId(103), NodeId(104)]);
    let mut e = Engine::new(NodeId(99), Index::default());
    e.handle_tick(S);
    for p in std::iter::once(source).chain(others) {
        connect(&mut e, p);
    }
    e.take_commands();
    e.handle_message(source, Message::Update { entries: all.clone() });
    let first = wanted(&e.take_commands(), source);
    let mine: Vec<&Entry> = all
        .iter()
        .filter(|f| {
            others
                .iter()
                .all(|o| schedule_order(*o, &f.path) > schedule_order(NodeId(99), &f.path))
        })
        .collect();
    assert!(mine.len() > 1 && mine.len() < 60, "{} of 150 are this node's", mine.len());
    assert_eq!(first.len(), mine.len(), "only its own share is asked of the source");
    let by_path: BTreeMap<RelPath, Entry> = all.iter().map(|f| (f.path.clone(), f.clone())).collect();
    for path in &first[1..] {
        assert!(wanted(&arrive(&mut e, source, &by_path[path]), source).is_empty());
    }
    // Another receiver offers one: it is asked of that receiver, and a
    // file it offers is asked of it before the source.
    let offered = all.iter().find(|f| !first.contains(&f.path)).unwrap().clone();
    e.handle_message(
        others[0],
        Message::Update {
            entries: vec![offered.clone()],
        },
    );
    assert_eq!(wanted(&e.take_commands(), others[0]), vec![offered.path.clone()]);
    // After a while, what no one offered is asked of the source.
    e.handle_tick(S + OFFER_WAIT / 2);
    assert!(wanted(&e.take_commands(), source).is_empty());
    e.handle_tick(S + OFFER_WAIT);
    assert_eq!(wanted(&e.take_commands(), source).len() as u64, SHARED_WINDOW_FILES - 1);
}

/// The same waits only while the source is busy with this node's own
/// share: a single new file (a live change) is asked of its one source at
/// once, whoever is first to fetch it.
#[test]
fn a_live_change_other_receivers_lack_is_asked_at_once() {
    let others = [NodeId(101), NodeId(102), NodeId(103), NodeId(104)];
    let mut e = connected(&[], &[A, others[0], others[1], others[2], others[3]]);
    for i in 0..20 {
        let f = file(&format!("live{i}"), 5 * S, format!("change {i}").as_bytes());
        e.handle_message(A, Message::Update { entries: vec![f.clone()] });
        assert_eq!(wanted(&e.take_commands(), A), vec![f.path.clone()]);
        assert!(wanted(&arrive(&mut e, A, &f), A).is_empty());
    }
}

/// The rendezvous order is the same on every build (nodes built by two
/// Rust releases run side by side): pinned, and a spread of its own per
/// peer (with five peers, each is first for about a fifth of the paths).
#[test]
fn the_schedule_order_is_fixed_and_each_peer_has_its_share() {
    assert_eq!(schedule_order(NodeId(1), &p("a/b.txt")), schedule_order(NodeId(1), &p("a/b.txt")));
    assert_eq!(schedule_order(NodeId(1), &p("a/b.txt")), 0x7e60_b390_3158_dd4b);
    let peers: Vec<NodeId> = (100..105).map(NodeId).collect();
    let mut first = [0usize; 5];
    for i in 0..1000 {
        let path = p(&format!("d/f{i}"));
        let (at, _) = peers.iter().enumerate().min_by_key(|(_, q)| schedule_order(**q, &path)).unwrap();
        first[at] += 1;
    }
    assert!(first.iter().all(|n| (140..=260).contains(n)), "{first:?}");
}

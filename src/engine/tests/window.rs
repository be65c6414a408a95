//! Wants a window at a time per peer (`requests.rs`): spread over every
//! source of a file, in an order of each node's own.

use super::*;
use crate::engine::requests::WINDOW_FILES;

/// `n` small files, as one index.
fn files(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| file(&format!("f{i:04}"), 5 * S, format!("content {i}").as_bytes()))
        .collect()
}

/// The paths asked of `peer` in `cmds`.
fn wanted(cmds: &[Command], peer: NodeId) -> Vec<RelPath> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send {
                peer: p,
                msg: Message::Want { files },
            } if *p == peer => Some(files.iter().map(|f| f.path.clone())),
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

#[test]
fn files_a_busy_source_cannot_take_go_to_another_source() {
    let all = files(300);
    let mut e = connected(&[], &[A, B]);
    e.handle_message(A, index_msg(all.clone()));
    let of_a = wanted(&e.take_commands(), A);
    assert_eq!(of_a.len() as u64, WINDOW_FILES);
    // B announces the same versions (it has just received them): the
    // files A has no room for are asked of B, none twice.
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

//! The digest descent: two engines whose indexes differ, made to talk
//! through their messages, find the difference folder by folder.

use super::*;

/// Deliver every message each engine sends to the other until neither
/// sends anything; returns the entries each pushed through `Update`s.
fn talk(a: &mut Engine, b: &mut Engine) -> (usize, usize) {
    let mut pushed = (0, 0);
    for _ in 0..50 {
        let (from_a, from_b) = (a.take_commands(), b.take_commands());
        if from_a.is_empty() && from_b.is_empty() {
            return pushed;
        }
        for (cmds, to, count, from) in [(from_a, &mut *b, &mut pushed.0, ME), (from_b, &mut *a, &mut pushed.1, A)] {
            for cmd in cmds {
                if let Command::Send { msg, .. } = cmd {
                    if let Message::Update { entries } = &msg {
                        *count += entries.len();
                    }
                    to.handle_message(from, msg);
                }
            }
        }
    }
    panic!("the descent did not end");
}

/// A tree of `n` folders of `m` files each.
fn tree(n: usize, m: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    for d in 0..n {
        out.push(dir(&format!("d{d}"), 1));
        for f in 0..m {
            out.push(file(&format!("d{d}/f{f}"), 2, format!("{d}/{f}").as_bytes()));
        }
    }
    out
}

/// `ours` and `theirs` connected as ME and A, told nothing by the index
/// exchange (as if each remembered the other up to date).
fn pair(ours: &[Entry], theirs: &[Entry]) -> (Engine, Engine) {
    let (mut a, mut b) = (engine_with(ours), engine_with(theirs));
    a.handle_connected(A, A, crate::wire::PROTOCOL_VERSION);
    b.handle_connected(ME, ME, crate::wire::PROTOCOL_VERSION);
    a.take_commands();
    b.take_commands();
    for (e, peer) in [(&mut a, A), (&mut b, ME)] {
        e.handle_message(
            peer,
            Message::IndexHead {
                identity: 1,
                since: 0,
                seq: 0,
            },
        );
        e.handle_message(peer, index_msg(vec![]));
        e.take_commands();
    }
    (a, b)
}

#[test]
fn a_difference_deep_in_a_large_tree_is_found_by_pushing_only_what_differs() {
    let base = tree(20, 30);
    let mut changed = base.clone();
    // Theirs lacks one file and holds a newer version of another.
    changed.retain(|e| e.path.as_str() != "d3/f7");
    let newer = file("d11/f2", 9, b"newer");
    for e in changed.iter_mut().filter(|e| e.path == newer.path) {
        *e = newer.clone();
    }
    let (mut a, mut b) = pair(&base, &changed);
    assert_ne!(a.tree_digest(), b.tree_digest());
    a.descend(A);
    b.descend(ME);
    let (from_a, from_b) = talk(&mut a, &mut b);
    // Each side sent its own version of what differs, and of the folders
    // above it (a child's digest covers its own entry and its subtree):
    // ours of d3, d3/f7, d11, d11/f2; theirs of d3, d11, d11/f2. Nothing
    // of the other 598 paths.
    assert_eq!((from_a, from_b), (4, 3), "pushed entries: ours, theirs");
    // Each takes what wins: a wants the newer file, b the missing one.
    let wanted = |e: &Engine| e.pending_by_peer().values().map(|(n, _)| *n).sum::<u64>();
    assert_eq!((wanted(&a), wanted(&b)), (1, 1));
}

#[test]
fn equal_trees_need_no_descent_and_a_folder_only_one_side_has_is_sent_whole() {
    let base = tree(3, 4);
    let (mut a, mut b) = pair(&base, &base);
    assert_eq!(a.tree_digest(), b.tree_digest());
    a.descend(A);
    assert_eq!(talk(&mut a, &mut b), (0, 0));
    let mut more = base.clone();
    more.push(dir("extra", 3));
    more.push(file("extra/x", 3, b"x"));
    more.push(tomb("d0/f1", 4));
    let (mut a, mut b) = pair(&base, &more);
    b.descend(ME);
    a.descend(A);
    let (_, from_b) = talk(&mut a, &mut b);
    assert_eq!(from_b, 4, "the new folder, its file, the deletion and its folder");
}

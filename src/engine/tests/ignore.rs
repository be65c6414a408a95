//! Engine tests for ignore rules and the tree digest.

use super::*;
use crate::engine::ignore::{IgnoreRules, IGNORE_FILE};

fn rules(text: &str) -> IgnoreRules {
    let (r, errors) = IgnoreRules::parse(text);
    assert!(errors.is_empty(), "{errors:?}");
    r
}

fn with_rules(entries: &[Entry], peers: &[NodeId], text: &str) -> Engine {
    let mut e = engine_with(entries);
    e.set_ignore(rules(text));
    for peer in peers {
        connect(&mut e, *peer);
    }
    e.take_commands();
    e
}

#[test]
fn local_changes_to_ignored_paths_are_not_announced() {
    let mut e = with_rules(&[], &[A], "*.log\nbuild/\n");
    let (keep, log, build, inner) = (
        file("a.txt", 5, b"a"),
        file("x.log", 5, b"l"),
        dir("build", 0),
        file("build/o", 5, b"o"),
    );
    e.handle_local(7, &[None], [&keep, &log, &build, &inner].iter().map(|x| observed(x)).collect());
    assert_eq!(e.take_commands(), saved(vec![update(A, vec![by_me(None, keep.clone())])]));
    assert_eq!(e.index().get(&log.path), None);
    assert_eq!(e.index().get(&inner.path), None);
}

#[test]
fn the_ignore_file_itself_is_announced_whatever_it_says() {
    let mut e = with_rules(&[], &[A], "*\n");
    let f = file(IGNORE_FILE, 5, b"*\n");
    e.handle_local(7, &[None], vec![observed(&f), observed(&file("other", 5, b"o"))]);
    assert_eq!(e.take_commands(), saved(vec![update(A, vec![by_me(None, f)])]));
}

#[test]
fn an_ignored_path_gone_from_disk_is_not_a_deletion() {
    // Synced before the rule came: still in the index.
    let (keep, log) = (file("a.txt", 5, b"a"), file("x.log", 5, b"l"));
    let mut e = with_rules(&[keep.clone(), log.clone()], &[A], "*.log\n");
    look_and_confirm(&mut e, 9, &[None], vec![]);
    let cmds = e.take_commands();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(cmds[0], Command::SaveIndex);
    let Command::Send {
        msg: Message::Update { entries },
        ..
    } = &cmds[1]
    else {
        panic!("{cmds:?}")
    };
    assert_eq!(entries.iter().map(|x| x.path.as_str()).collect::<Vec<_>>(), vec!["a.txt"]);
    assert!(entries[0].deleted);
    assert_eq!(e.index().get(&log.path), Some(log.clone()), "the ignored entry stays as it was");
}

#[test]
fn peers_versions_of_ignored_paths_change_nothing_here() {
    let (mine_log, mine_o) = (file("x.log", 10, b"mine"), file("build/o", 10, b"mine"));
    let mut e = with_rules(&[mine_log.clone(), dir("build", 1), mine_o.clone()], &[A], "*.log\nbuild/\n");
    let newer = file("a.txt", 20, b"theirs");
    e.handle_message(
        A,
        index_msg(vec![
            file("x.log", 20, b"theirs"),
            tomb("build/o", 20),
            file("build/new.o", 20, b"n"),
            tomb("build", 20),
            newer.clone(),
        ]),
    );
    assert_eq!(e.take_commands(), vec![want(A, &[&newer])]);
    assert_eq!(e.index().get(&mine_log.path), Some(mine_log.clone()));
    assert_eq!(e.index().get(&mine_o.path), Some(mine_o.clone()));
    assert_eq!(e.pending(), 1);
}

#[test]
fn a_peers_deletion_of_an_ignored_file_is_no_rename_source() {
    // The peer moved x.log to y.txt: here x.log is ignored, so y.txt is
    // copied (or fetched), never made by moving our x.log away.
    let log = file("x.log", 10, b"same");
    let mut e = with_rules(std::slice::from_ref(&log), &[A], "*.log\n");
    let moved = file("y.txt", 20, b"same");
    e.handle_message(
        A,
        Message::Update {
            entries: vec![tomb("x.log", 20), moved.clone()],
        },
    );
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::Copy {
                from: log,
                entry: moved,
                local: None
            }
        }]
    );
}

#[test]
fn ignored_entries_are_left_out_of_the_index_sent_and_never_served() {
    let (keep, log) = (file("a.txt", 5, b"a"), file("x.log", 5, b"l"));
    let mut e = engine_with(&[keep.clone(), log.clone()]);
    e.set_ignore(rules("*.log\n"));
    connect(&mut e, A);
    assert_eq!(e.take_commands()[1..], whole_index(&e, A, vec![keep]));
    e.handle_message(
        A,
        Message::Want {
            files: vec![WantFile {
                path: log.path.clone(),
                hash: log.hash.into(),
            }],
        },
    );
    assert_eq!(
        e.take_commands(),
        vec![Command::Send {
            peer: A,
            msg: Message::Unavailable { path: log.path }
        }]
    );
}

#[test]
fn digests_agree_on_the_same_tree_whatever_the_history() {
    let f = file("d/x", 5, b"x");
    let t = tomb("gone", 8);
    let one = engine_with(&[dir("d", 1), f.clone(), t.clone()]);
    // Another node saw the folder and the deletion at other times, and
    // inserted in another order: the same tree.
    let two = engine_with(&[Entry { version: 9, ..t.clone() }, f.clone(), dir("d", 3)]);
    assert_eq!(one.tree_digest(), two.tree_digest());
    // Another mtime, content, or a missing deletion: another tree.
    let other_mtime = engine_with(&[dir("d", 1), file("d/x", 6, b"x"), t.clone()]).tree_digest();
    let other_content = engine_with(&[dir("d", 1), file("d/x", 5, b"y"), t.clone()]).tree_digest();
    let no_tomb = engine_with(&[dir("d", 1), f.clone()]).tree_digest();
    for d in [other_mtime, other_content, no_tomb] {
        assert_ne!(one.tree_digest(), d);
    }
    // Ignored paths are not part of it, nor of the size.
    let mut three = engine_with(&[dir("d", 1), f.clone(), t, file("x.log", 1, b"local")]);
    three.set_ignore(rules("*.log\n"));
    assert_eq!(three.tree_digest(), one.tree_digest());
    assert_eq!(three.tree_size(), (1, 1));
}

#[test]
fn the_digest_goes_to_each_peer_once_per_change() {
    let mut e = connected(&[file("a", 5, b"a")], &[A, B]);
    let d0 = e.tree_digest();
    e.share_digest();
    let sent = |peer, digest, seq| Command::Send {
        peer,
        msg: Message::TreeDigest { digest, seq },
    };
    assert_eq!(e.take_commands(), vec![sent(A, d0, 1), sent(B, d0, 1)]);
    e.share_digest();
    assert_eq!(e.take_commands(), vec![], "unchanged: nothing sent");
    e.handle_local(9, &[None], vec![observed(&file("a", 5, b"a")), observed(&file("b", 6, b"b"))]);
    e.take_commands();
    let d1 = e.tree_digest();
    assert_ne!(d0, d1);
    e.share_digest();
    assert_eq!(e.take_commands(), vec![sent(A, d1, 2), sent(B, d1, 2)]);
    // What a peer tells us is recorded, and nothing is decided from it.
    e.handle_message(A, Message::TreeDigest { digest: d1, seq: 1 });
    assert_eq!(e.take_commands(), vec![]);
    assert_eq!(e.peer_digest(A), Some(d1));
    assert_eq!(e.peer_digest(B), None);
}

#[test]
fn pending_transfers_are_counted_per_peer() {
    let mut e = connected(&[], &[A, B]);
    let (f1, f2) = (file("x", 5, b"12345"), file("y", 5, b"123"));
    e.handle_message(A, index_msg(vec![f1.clone()]));
    e.handle_message(B, index_msg(vec![f1, f2]));
    let pending = e.pending_by_peer();
    assert_eq!(pending.get(&A), Some(&(1, 5)));
    assert_eq!(pending.get(&B), Some(&(1, 3)));
}

#[test]
fn the_last_failure_is_kept_for_status() {
    let mut e = connected(&[], &[A]);
    assert_eq!(e.last_error(), None);
    let f = file("x", 5, b"x");
    e.handle_message(A, index_msg(vec![f.clone()]));
    e.take_commands();
    e.handle_received(A, f, Transfer::Full, Err("disk full".into()));
    let err = e.last_error().unwrap_or_default();
    assert!(err.contains("disk full") && err.contains('x'), "{err}");
}

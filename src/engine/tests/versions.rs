//! Symlinks, modes, and peers that speak the older protocol (4), which
//! holds neither.

use super::*;
use crate::wire::OLDEST_PROTOCOL_VERSION as OLD;

/// A link made at `t` in the helpers' one history (see `file`).
fn link(path: &str, t: i128, target: &str) -> Entry {
    Entry {
        vector: Vector::single(HIST, t as u64),
        by: HIST,
        ..crate::wire::testing::link(path, t, target)
    }
}

fn with_mode(e: Entry, mode: u32) -> Entry {
    Entry {
        mode,
        exec: mode & 0o111 != 0,
        ..e
    }
}

/// The disk actions and disconnections among `cmds`.
fn acts(cmds: Vec<Command>) -> Vec<Command> {
    cmds.into_iter()
        .filter(|c| matches!(c, Command::Apply { .. } | Command::Close { .. }))
        .collect()
}

fn apply(peer: NodeId, action: Action) -> Command {
    Command::Apply { peer, action }
}

#[test]
fn a_peers_link_is_made_without_a_transfer_and_replaces_a_file() {
    let old = file("latest", S, b"v2");
    let mut e = connected(std::slice::from_ref(&old), &[A]);
    let l = link("latest", 2 * S, "v3/");
    e.handle_message(A, Message::Update { entries: vec![l.clone()] });
    let made = apply(
        A,
        Action::MakeLink {
            entry: l,
            local: Some(old),
        },
    );
    assert_eq!(acts(e.take_commands()), vec![made]);
}

#[test]
fn a_mode_change_alone_is_applied_without_a_transfer() {
    let f = file("f", S, b"x");
    let mut e = connected(std::slice::from_ref(&f), &[A]);
    let chmod = with_mode(file("f", 2 * S, b"x"), 0o600);
    e.handle_message(
        A,
        Message::Update {
            entries: vec![chmod.clone()],
        },
    );
    let set = apply(A, Action::SetMtime { entry: chmod, local: f });
    assert_eq!(acts(e.take_commands()), vec![set]);
    // A folder already here takes a new mode; the same mode is only noted.
    let d = dir("d", S);
    let mut e = connected(std::slice::from_ref(&d), &[A]);
    let private = with_mode(dir("d", 2 * S), 0o700);
    e.handle_message(
        A,
        Message::Update {
            entries: vec![private.clone()],
        },
    );
    let made = apply(
        A,
        Action::MakeDir {
            entry: private.clone(),
            local: Some(d),
        },
    );
    assert_eq!(acts(e.take_commands()), vec![made]);
    let mut e = connected(std::slice::from_ref(&private), &[A]);
    let again = Entry {
        version: 3 * S,
        vector: Vector::single(HIST, 3 * S as u64),
        ..private
    };
    e.handle_message(A, Message::Update { entries: vec![again] });
    assert_eq!(acts(e.take_commands()), vec![]);
}

#[test]
fn a_peer_speaking_4_is_sent_links_as_tombstones_and_no_modes() {
    let (f, l) = (with_mode(file("f", S, b"x"), 0o640), link("l", S, "t"));
    let mut e = engine_with(&[f.clone(), l.clone()]);
    e.handle_connected(A, A, OLD);
    e.handle_message(A, Message::IndexRequest { identity: 0, since: 0 });
    let sent: Vec<Entry> = e
        .take_commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Send {
                msg: Message::Index { entries, .. },
                ..
            } => Some(entries),
            _ => None,
        })
        .flatten()
        .collect();
    let tombstone = Entry {
        kind: Kind::File,
        deleted: true,
        size: 0,
        hash: Hash::ZERO,
        target: None,
        ..l
    };
    assert_eq!(sent, vec![Entry { mode: 0, ..f }, tombstone]);
    // A later change goes the same way.
    e.handle_local(2 * S, &[Some(p("n"))], vec![observed(&link("n", 2 * S, "x"))]);
    for c in e.take_commands() {
        if let Command::Send {
            msg: Message::Update { entries },
            ..
        } = c
        {
            assert!(entries.iter().all(|e| e.kind != Kind::Symlink && e.mode == 0), "{entries:?}");
        }
    }
}

#[test]
fn a_peer_speaking_4_that_sends_a_link_or_a_mode_is_disconnected() {
    for bad in [link("l", S, "t"), with_mode(file("f", S, b"x"), 0o600)] {
        let mut e = engine_with(&[]);
        e.handle_connected(A, A, OLD);
        e.take_commands();
        e.handle_message(A, Message::Update { entries: vec![bad] });
        let cmds = acts(e.take_commands());
        assert!(matches!(cmds.as_slice(), [Command::Close { peer: A, .. }]), "{cmds:?}");
    }
}

#[test]
fn a_peer_speaking_4_compares_only_what_it_can_hold() {
    let (f, l) = (with_mode(file("f", S, b"x"), 0o640), link("d/l", S, "t"));
    let mut ours = engine_with(&[dir("d", S), f.clone(), l.clone()]);
    ours.handle_connected(A, A, OLD);
    ours.handle_connected(B, B, crate::wire::PROTOCOL_VERSION);
    // What a node of protocol 4 holds once it was sent all of it.
    let theirs = engine_with(&[dir("d", S), f.spoken_in(OLD), l.spoken_in(OLD)]);
    assert_eq!(ours.tree_digest_for(A), theirs.tree_digest());
    assert_ne!(ours.tree_digest_for(B), theirs.tree_digest());
    assert_eq!(ours.tree_digest_for(B), ours.tree_digest());
    // The descent compares folders the same way: nothing differs.
    ours.take_commands();
    let children = theirs.index().children(None, 10, OLD).unwrap();
    let children = children
        .into_iter()
        .map(|(name, digest)| crate::wire::ChildDigest { name, digest })
        .collect();
    ours.handle_message(
        A,
        Message::Subtree {
            dir: None,
            children: Some(children),
        },
    );
    assert_eq!(ours.take_commands(), vec![]);
}

/// The same version may reach a node through a peer of protocol 4 first:
/// without its mode, and a link as a tombstone. When the whole of it
/// comes, it wins over that copy (no transfer: the content is here).
#[test]
fn the_whole_version_wins_over_its_copy_from_a_peer_speaking_4() {
    let (f, l) = (with_mode(file("f", S, b"x"), 0o444), link("l", S, "t"));
    let (f_old, l_old) = (f.spoken_in(OLD), l.spoken_in(OLD));
    let mut e = connected(&[f_old.clone(), l_old], &[A]);
    e.handle_message(
        A,
        Message::Update {
            entries: vec![f.clone(), l.clone()],
        },
    );
    let expected = vec![
        apply(A, Action::SetMtime { entry: f, local: f_old }),
        apply(A, Action::MakeLink { entry: l, local: None }),
    ];
    assert_eq!(acts(e.take_commands()), expected);
}

#[test]
fn a_look_sees_a_new_mode_and_a_retargeted_link_as_changes() {
    let f = by_me(None, with_mode(file("f", S, b"x"), 0o644));
    let l = by_me(None, link("l", S, "a"));
    let mut e = connected(&[f.clone(), l.clone()], &[A]);
    let unchanged = [observed(&f), observed(&l)];
    e.handle_local(2 * S, &[Some(p("f")), Some(p("l"))], unchanged.to_vec());
    assert_eq!(e.take_commands(), vec![], "the same mode and target: nothing new");
    let chmod = Observed {
        mode: 0o600,
        ..observed(&f)
    };
    let retarget = observed(&link("l", 3 * S, "b"));
    e.handle_local(3 * S, &[Some(p("f")), Some(p("l"))], vec![chmod, retarget]);
    let announced: Vec<Entry> = e
        .take_commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Send {
                msg: Message::Update { entries },
                ..
            } => Some(entries),
            _ => None,
        })
        .flatten()
        .collect();
    let got: Vec<(String, u32, Option<String>)> = announced.iter().map(|e| (e.path.to_string(), e.mode, e.target.clone())).collect();
    assert_eq!(got, vec![("f".into(), 0o600, None), ("l".into(), 0, Some("b".into()))]);
    // A mode no node of protocol 5 knew (from one of 4) is the one it
    // puts on disk: 0o644 is no change, 0o600 is.
    let g = file("g", S, b"y");
    let mut e = connected(std::slice::from_ref(&g), &[A]);
    e.handle_local(
        2 * S,
        &[Some(p("g"))],
        vec![Observed {
            mode: 0o644,
            ..observed(&g)
        }],
    );
    assert_eq!(e.take_commands(), vec![]);
    e.handle_local(
        3 * S,
        &[Some(p("g"))],
        vec![Observed {
            mode: 0o600,
            ..observed(&g)
        }],
    );
    assert!(e.take_commands().iter().any(|c| matches!(
        c,
        Command::Send {
            msg: Message::Update { .. },
            ..
        }
    )));
}

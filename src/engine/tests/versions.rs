//! Symlinks, modes, extended attributes, and peers that speak protocol 5,
//! which holds no extended attributes.

use super::*;
use crate::wire::Xattrs;

/// Protocol 5: a node of 7 no longer speaks it (the handshake refuses
/// it), but the rules for what it cannot hold stay until they are folded
/// away (`Entry::spoken_in`, the digest's lanes).
const OLD: u32 = 5;

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

fn tagged(e: Entry, value: &[u8]) -> Entry {
    Entry {
        xattrs: Some(Xattrs([("user.tag".to_string(), value.to_vec())].into())),
        ..e
    }
}

#[test]
fn a_peer_speaking_5_is_sent_no_extended_attributes() {
    let (f, l) = (tagged(with_mode(file("f", S, b"x"), 0o640), b"1"), link("l", S, "t"));
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
    assert_eq!(sent, vec![Entry { xattrs: None, ..f }, l]);
    // A later change goes the same way.
    let mut n = observed(&file("n", 2 * S, b"n"));
    n.xattrs = Some(Xattrs::default());
    e.handle_local(2 * S, &[Some(p("n"))], vec![n]);
    let mut updates = 0;
    for c in e.take_commands() {
        if let Command::Send {
            msg: Message::Update { entries },
            ..
        } = c
        {
            updates += 1;
            assert!(entries.iter().all(|e| e.xattrs.is_none()), "{entries:?}");
        }
    }
    assert_eq!(updates, 1);
}

#[test]
fn a_peer_speaking_5_that_sends_extended_attributes_is_disconnected() {
    let mut e = engine_with(&[]);
    e.handle_connected(A, A, OLD);
    e.take_commands();
    let bad = tagged(file("f", S, b"x"), b"1");
    e.handle_message(A, Message::Update { entries: vec![bad] });
    let cmds = acts(e.take_commands());
    assert!(matches!(cmds.as_slice(), [Command::Close { peer: A, .. }]), "{cmds:?}");
}

#[test]
fn a_peer_speaking_5_compares_only_what_it_can_hold() {
    let f = tagged(file("d/f", S, b"x"), b"1");
    let mut ours = engine_with(&[dir("d", S), f.clone()]);
    ours.handle_connected(A, A, OLD);
    ours.handle_connected(B, B, crate::wire::PROTOCOL_VERSION);
    // What a node of protocol 5 holds once it was sent all of it.
    let theirs = engine_with(&[dir("d", S), f.spoken_in(OLD)]);
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

/// The same version may reach a node through a peer of protocol 5 first,
/// without its extended attributes. When the whole of it comes, it wins
/// over that copy (no transfer: the content is here).
#[test]
fn the_whole_version_wins_over_its_copy_from_a_peer_speaking_5() {
    let f = tagged(with_mode(file("f", S, b"x"), 0o444), b"1");
    let f_old = f.spoken_in(OLD);
    let mut e = connected(std::slice::from_ref(&f_old), &[A]);
    e.handle_message(A, Message::Update { entries: vec![f.clone()] });
    let expected = vec![apply(A, Action::SetMtime { entry: f, local: f_old })];
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

/// Extended attributes changed alone are a new version, and travel without
/// a transfer; a look that does not read them (`--xattrs` off) or a
/// version that does not know them sees nothing new.
#[test]
fn an_extended_attribute_change_alone_is_a_new_version() {
    let f = by_me(None, tagged(file("f", S, b"x"), b"1"));
    let mut e = connected(std::slice::from_ref(&f), &[A]);
    let mut not_read = observed(&f);
    not_read.xattrs = None;
    e.handle_local(2 * S, &[Some(p("f"))], vec![observed(&f), not_read]);
    assert_eq!(e.take_commands(), vec![], "the same attributes, or none read: nothing new");
    let mut changed = observed(&f);
    changed.xattrs = tagged(f.clone(), b"2").xattrs;
    e.handle_local(3 * S, &[Some(p("f"))], vec![changed]);
    let now = e.index().live(&p("f")).unwrap();
    assert_eq!(now.xattrs, tagged(f.clone(), b"2").xattrs);
    assert!(now.version > f.version && now.hash == f.hash);
    // A peer's version of it is applied as metadata.
    let mut other = connected(std::slice::from_ref(&f), &[A]);
    other.handle_message(
        A,
        Message::Update {
            entries: vec![now.clone()],
        },
    );
    assert_eq!(
        acts(other.take_commands()),
        vec![apply(A, Action::SetMtime { entry: now, local: f })]
    );
    // A folder's, as a folder's mode is (found by the workload, everyday
    // seed 7100021301: recorded, never applied).
    let d = dir("d", S);
    let tagged_d = Entry {
        version: 2 * S,
        ..tagged(d.clone(), b"1")
    };
    let mut other = connected(std::slice::from_ref(&d), &[A]);
    other.handle_message(
        A,
        Message::Update {
            entries: vec![tagged_d.clone()],
        },
    );
    let made = Action::MakeDir {
        entry: tagged_d,
        local: Some(d),
    };
    assert_eq!(acts(other.take_commands()), vec![apply(A, made)]);
}

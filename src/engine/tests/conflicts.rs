//! Engine tests for concurrent edits: conflict copies, edits against
//! deletes, merged histories.

use super::*;

/// The common ancestor both sides start from, then a version of it made by
/// device `dev` at time `t` that saw it.
fn edited(base: &Entry, dev: NodeId, t: i128, content: &[u8]) -> Entry {
    Entry {
        vector: base.vector.bump(dev, t),
        by: dev,
        exec: false,
        mode: 0,
        target: None,
        ..file(base.path.as_str(), t, content)
    }
}

fn deleted(base: &Entry, dev: NodeId, t: i128) -> Entry {
    Entry {
        vector: base.vector.bump(dev, t),
        by: dev,
        exec: false,
        mode: 0,
        target: None,
        ..tomb(base.path.as_str(), t)
    }
}

#[test]
fn a_concurrent_edit_keeps_the_loser_as_a_conflict_copy_before_taking_the_winner() {
    let base = file("report.txt", 10, b"base");
    let mine = edited(&base, ME, 20, b"mine");
    let theirs = edited(&base, A, 30, b"theirs");
    let mut e = connected(std::slice::from_ref(&mine), &[A, B]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    let copy = crate::engine::conflict::conflict_entry(&mine).unwrap();
    let name = format!("report.sync-conflict-19700101-000000-00000000-{}.txt", mine.hash.short());
    assert_eq!(copy.path.as_str(), name);
    let cc = Action::ConflictCopy {
        from: mine.clone(),
        copy: copy.clone(),
        then: theirs.clone(),
    };
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: cc.clone()
        }]
    );
    // Once the copy is on disk it goes to every peer (the winner's sender
    // too: it lacks it), and only then is the winner asked for.
    e.handle_action_done(A, cc, Ok(()));
    assert_eq!(
        e.take_commands(),
        vec![update(A, vec![copy.clone()]), update(B, vec![copy.clone()]), want(A, &[&theirs])]
    );
    assert_eq!(e.index().live(&copy.path), Some(copy.clone()));
}

#[test]
fn a_failed_conflict_copy_leaves_the_loser_in_place() {
    let base = file("f", 10, b"base");
    let mine = edited(&base, ME, 20, b"mine");
    let theirs = edited(&base, A, 30, b"theirs");
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    let cmds = e.take_commands();
    let Some(Command::Apply { action, .. }) = cmds.into_iter().next() else {
        panic!("no conflict copy")
    };
    e.handle_action_done(A, action, Err(ActionError::Failed("disk full".into())));
    assert_eq!(e.take_commands(), vec![]);
    assert_eq!(e.index().live(&p("f")), Some(mine.clone()));
}

/// A deletion heard and seen by its maker, but not applied here (a disk
/// error), superseded our version all the same: a concurrent version that
/// comes next meets the deletion, not a loser to keep (found by the
/// workload, faults seed 7200021654: a conflict copy of a file deleted by a
/// user who had it, on the node whose disk was full).
#[test]
fn a_version_whose_deletion_failed_here_is_no_conflict_loser() {
    let base = file("f", 10, b"base");
    let mut e = connected(std::slice::from_ref(&base), &[A, B]);
    let gone = deleted(&base, A, 20);
    e.handle_message(
        A,
        Message::Update {
            entries: vec![gone.clone()],
        },
    );
    let delete = Action::Delete {
        entry: gone.clone(),
        local: base.clone(),
    };
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: delete.clone()
        }]
    );
    e.handle_action_done(A, delete, Err(ActionError::Failed("f: No space left on device".into())));
    assert_eq!(e.take_commands(), vec![]);
    // A device that never saw `base` makes the path anew.
    let made = Entry {
        vector: Vector::single(B, 30),
        by: B,
        ..file("f", 30, b"made elsewhere")
    };
    e.handle_message(
        B,
        Message::Update {
            entries: vec![made.clone()],
        },
    );
    let cmds = e.take_commands();
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::Apply {
                action: Action::ConflictCopy { .. },
                ..
            }
        )),
        "{cmds:?}"
    );
    assert!(cmds.contains(&want(B, &[&made])), "{cmds:?}");
}

#[test]
fn a_sequential_edit_makes_no_conflict_copy() {
    let base = file("f", 10, b"base");
    let mine = edited(&base, ME, 20, b"mine");
    // The peer edited our version: it saw it.
    let theirs = edited(&mine, A, 30, b"theirs");
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    assert_eq!(e.take_commands(), vec![want(A, &[&theirs])]);
}

#[test]
fn the_winning_side_of_a_concurrent_edit_changes_nothing() {
    let base = file("f", 10, b"base");
    let mine = edited(&base, ME, 40, b"mine, newer");
    let theirs = edited(&base, A, 30, b"theirs");
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    e.handle_message(A, index_msg(vec![theirs]));
    // The loser's holder keeps its copy; this node lacks those bytes.
    assert_eq!(e.take_commands(), vec![]);
}

#[test]
fn a_conflict_copy_made_elsewhere_or_deleted_since_is_not_made_again() {
    let base = file("f", 10, b"base");
    let mine = edited(&base, ME, 20, b"mine");
    let theirs = edited(&base, A, 30, b"theirs");
    let copy = crate::engine::conflict::conflict_entry(&mine).unwrap();
    // A peer made the identical copy already: only the winner is wanted.
    let mut e = connected(&[mine.clone(), copy.clone()], &[A]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    assert_eq!(e.take_commands(), vec![want(A, &[&theirs])]);
    // The user deleted the copy after seeing it: it stays deleted.
    let gone = deleted(&copy, B, 50);
    let mut e = connected(&[mine, gone], &[A]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    assert_eq!(e.take_commands(), vec![want(A, &[&theirs])]);
}

#[test]
fn an_edit_beats_a_concurrent_delete_and_the_file_comes_back() {
    let base = file("f", 10, b"base");
    let mine = edited(&base, ME, 20, b"edited here");
    let gone = deleted(&base, A, 30);
    let mut e = connected(std::slice::from_ref(&mine), &[A, B]);
    e.handle_message(A, index_msg(vec![gone.clone()]));
    // The file stays, as a version that saw both and outranks the delete.
    let kept = Entry {
        version: 30,
        vector: mine.vector.merge(&gone.vector),
        ..mine.clone()
    };
    assert_eq!(
        e.take_commands(),
        vec![update(A, vec![kept.clone()]), update(B, vec![kept.clone()])]
    );
    assert!(crate::engine::index::beats(&kept, &gone));
    assert_eq!(e.index().live(&p("f")), Some(kept.clone()));
    // The node that deleted it takes the file back.
    let mut d = connected(std::slice::from_ref(&gone), &[ME]);
    d.handle_message(ME, index_msg(vec![kept.clone()]));
    assert_eq!(d.take_commands(), vec![want(ME, &[&kept])]);
    // And ignores the plain edit, which it outranks: only the holder of
    // the edit decides, so the two never race.
    let mut d = connected(std::slice::from_ref(&gone), &[ME]);
    d.handle_message(ME, index_msg(vec![mine]));
    assert_eq!(d.take_commands(), vec![]);
}

#[test]
fn a_delete_that_saw_a_kept_edit_wins_though_it_missed_the_first_delete() {
    let base = file("f", 10, b"base");
    let mine = edited(&base, ME, 20, b"edited here");
    let kept = resurrection_of(&mine, &deleted(&base, A, 30));
    // B saw the edit (not A's delete) and deleted the file after it.
    let gone = deleted(&mine, B, 40);
    let mut e = connected(std::slice::from_ref(&kept), &[B]);
    e.handle_message(B, index_msg(vec![gone.clone()]));
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: B,
            action: Action::Delete { entry: gone, local: kept }
        }]
    );
}

/// What `an_edit_beats_a_concurrent_delete_and_the_file_comes_back` shows
/// the holder of `edit` records when `delete` missed it.
fn resurrection_of(edit: &Entry, delete: &Entry) -> Entry {
    Entry {
        version: delete.version,
        vector: edit.vector.merge(&delete.vector),
        ..edit.clone()
    }
}

#[test]
fn a_delete_that_saw_the_edit_wins() {
    let base = file("f", 10, b"base");
    let mine = edited(&base, ME, 20, b"edited here");
    let gone = deleted(&mine, A, 30);
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    e.handle_message(A, index_msg(vec![gone.clone()]));
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::Delete { entry: gone, local: mine }
        }]
    );
}

#[test]
fn a_node_that_was_away_does_not_bring_a_deleted_file_back() {
    // It holds the version the delete saw; the delete wins, the file goes.
    let base = file("f", 10, b"base");
    let gone = deleted(&base, A, 30);
    let mut e = connected(std::slice::from_ref(&base), &[A]);
    e.handle_message(A, index_msg(vec![gone.clone()]));
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::Delete { entry: gone, local: base }
        }]
    );
    // A file re-created after the delete (it saw the tombstone) comes back.
    let gone = deleted(&file("g", 10, b"x"), A, 30);
    let again = edited(&gone, B, 40, b"re-created");
    let mut e = connected(std::slice::from_ref(&gone), &[B]);
    e.handle_message(B, index_msg(vec![again.clone()]));
    assert_eq!(e.take_commands(), vec![want(B, &[&again])]);
}

#[test]
fn a_rebuilt_index_has_unknown_histories_that_a_newer_delete_still_beats() {
    let mut e = Engine::new(ME, Index::default()).with_unknown_history();
    connect(&mut e, A);
    e.take_commands();
    let found = file("f", 10, b"on disk");
    e.handle_local(100, &[None], vec![observed(&found)]);
    let unknown = Entry {
        vector: Vector::default(),
        by: ME,
        ..found
    };
    assert_eq!(e.take_commands(), saved(vec![update(A, vec![unknown.clone()])]));
    // Not concurrent with anything: the newer delete wins as before.
    let gone = deleted(&file("f", 5, b"older"), A, 30);
    e.handle_message(A, index_msg(vec![gone.clone()]));
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::Delete {
                entry: gone,
                local: unknown
            }
        }]
    );
    // Only the first whole scan is of unknown history.
    e.handle_local(200, &[None], vec![observed(&file("new", 150, b"n"))]);
    let cmds = e.take_commands();
    assert!(
        matches!(&cmds[..], [Command::SaveIndex, Command::Send { msg: Message::Update { entries }, .. }] if entries[0].vector == Vector::single(ME, 150))
    );
}

#[test]
fn the_same_version_with_more_history_merges_vectors() {
    let base = file("f", 10, b"same");
    let theirs = Entry {
        vector: base.vector.bump(A, 5),
        ..base.clone()
    };
    let mut e = connected(std::slice::from_ref(&base), &[A, B]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    let merged = Entry {
        vector: base.vector.merge(&theirs.vector),
        ..base
    };
    assert_eq!(
        e.take_commands(),
        vec![update(A, vec![merged.clone()]), update(B, vec![merged.clone()])]
    );
    // Hearing it again changes nothing.
    e.handle_message(B, index_msg(vec![theirs]));
    assert_eq!(e.take_commands(), vec![]);
}

/// Found by the random workload (faults, seed 7200021644): two different
/// losing versions by the same device within one second shared one copy
/// name; the second was taken for "made already" and its content lost.
#[test]
fn two_losers_of_one_device_and_second_each_get_a_copy() {
    let base = file("f.txt", 10, b"base");
    let first = edited(&base, ME, 20, b"first loser");
    let second = Entry {
        hash: Hash::of(b"second loser"),
        ..edited(&first, ME, 20, b"second loser")
    };
    let copy_of_first = crate::engine::conflict::conflict_entry(&first).unwrap();
    let mut e = connected(&[second.clone(), copy_of_first.clone()], &[A]);
    let theirs = edited(&base, A, 30, b"theirs");
    e.handle_message(
        A,
        Message::Update {
            entries: vec![theirs.clone()],
        },
    );
    let cmds = e.take_commands();
    assert!(
        matches!(&cmds[..], [Command::Apply { action: Action::ConflictCopy { from, copy, .. }, .. }] if *from == second && copy.path != copy_of_first.path),
        "{cmds:?}"
    );
}

/// Found by the workload (faults, seed 7200021805): two nodes each kept
/// their own edit against one delete, one of them stale; ranked alike, the
/// stale one won by its hash and replaced the newer edit with no copy. A
/// version that is older history than ours never replaces it.
#[test]
fn a_higher_ranked_but_older_history_never_replaces_our_edit() {
    let base = file("f.txt", 10, b"base");
    let mine = edited(&base, ME, 20, b"newer edit");
    let mut e = connected(std::slice::from_ref(&mine), &[A]);
    // Ranked above ours, but its history is our base's only.
    let stale = Entry {
        version: 50,
        mtime: 50,
        hash: Hash::of(b"stale"),
        ..base.clone()
    };
    e.handle_message(
        A,
        Message::Update {
            entries: vec![stale.clone()],
        },
    );
    let ours = Entry {
        version: 51,
        ..mine.clone()
    };
    assert_eq!(e.take_commands(), vec![update(A, vec![ours.clone()])]);
    assert_eq!(e.index().get(&mine.path), Some(ours.clone()));
}

/// A version of unknown history (empty vector) that beats ours is no
/// descendant of ours (a local version ranks above what it builds on):
/// ours is kept as a conflict copy. One of unknown history that loses to a
/// known one is its ancestor, as before: no copy (a file received from a
/// node whose index was new, then edited).
#[test]
fn an_unknown_history_that_wins_keeps_ours_and_one_that_loses_is_an_ancestor() {
    let unknown = |content: &[u8]| Entry {
        vector: Vector::default(),
        ..file("a.mp4", 10, content)
    };
    // Equal times: the larger hash wins, whichever side it is on.
    let (x, y) = (by_me(None, file("a.mp4", 10, b"mine")), unknown(b"theirs"));
    let (ours, theirs) = if y.hash > x.hash {
        (x, y)
    } else {
        (by_me(None, file("a.mp4", 10, b"other")), y)
    };
    assert!(theirs.hash > ours.hash);
    let mut e = connected(std::slice::from_ref(&ours), &[A]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    let copy = crate::engine::conflict::conflict_entry(&ours).unwrap();
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: Action::ConflictCopy {
                from: ours,
                copy,
                then: theirs
            }
        }]
    );
    // Received with no history, then edited elsewhere: sequential.
    let received = unknown(b"seeded");
    let edit = edited(&received, A, 20, b"edited");
    let mut e = connected(std::slice::from_ref(&received), &[A]);
    e.handle_message(A, index_msg(vec![edit.clone()]));
    assert_eq!(e.take_commands(), vec![want(A, &[&edit])]);
}

/// Issue 26, item 8: a peer's version never replaces or deletes a file a
/// program holds open for writing here. The disk says so (`Busy`): the
/// file stays, the engine looks at it again at once (the writer may have
/// changed it) and weighs the peer's version again later, and applies it
/// then if the writer is gone and nothing changed.
#[test]
fn a_file_open_for_writing_here_is_not_deleted_under_its_writer() {
    let base = file("db-shm", 10, b"shared memory");
    let gone = deleted(&base, A, 30);
    let mut e = connected(std::slice::from_ref(&base), &[A]);
    tick(&mut e, 100 * S);
    e.handle_message(A, index_msg(vec![gone.clone()]));
    let delete = Action::Delete {
        entry: gone.clone(),
        local: base.clone(),
    };
    assert_eq!(
        e.take_commands(),
        vec![Command::Apply {
            peer: A,
            action: delete.clone()
        }]
    );
    e.handle_action_done(
        A,
        delete.clone(),
        Err(ActionError::Busy("db-shm: open for writing by pid 7 (app)".into())),
    );
    assert_eq!(e.take_commands(), vec![Command::Rescan { paths: vec![p("db-shm")] }]);
    assert_eq!(tick(&mut e, 100 * S + S / 2), vec![], "not again at once");
    assert_eq!(
        tick(&mut e, 101 * S),
        vec![Command::Apply { peer: A, action: delete }],
        "weighed again a second later"
    );
}

/// A local edit made while a concurrent version was on its way here (asked
/// for, or its bytes arriving) is kept as a conflict copy before that
/// version replaces it. Decided when the edit was seen, not when the bytes
/// came (found by the workload, everyday seed 7100021956: the edit was
/// replaced, its bytes only in the trash).
#[test]
fn a_local_edit_while_a_concurrent_version_is_on_its_way_is_kept_as_a_conflict_copy() {
    for streaming in [false, true] {
        let base = file("f", 10, b"base");
        let theirs = edited(&base, A, 30, b"theirs");
        let mut e = connected(std::slice::from_ref(&base), &[A, B]);
        e.handle_message(
            A,
            Message::Update {
                entries: vec![theirs.clone()],
            },
        );
        assert_eq!(e.take_commands(), vec![want(A, &[&theirs])]);
        if streaming {
            assert_eq!(
                e.handle_file_start(A, &theirs),
                Receive::Write {
                    expected: Some(base.clone())
                }
            );
        }
        // The user's edit, older than theirs by its mtime: theirs wins.
        let on_disk = file("f", 20, b"mine");
        look_and_confirm(&mut e, 25, &[Some(p("f"))], vec![observed(&on_disk)]);
        let mine = e.index().live(&p("f")).unwrap();
        assert_eq!(mine.hash, on_disk.hash);
        let copy = crate::engine::conflict::conflict_entry(&mine).unwrap();
        let cc = Action::ConflictCopy {
            from: mine.clone(),
            copy: copy.clone(),
            then: theirs.clone(),
        };
        let cmds = e.take_commands();
        assert!(
            cmds.contains(&Command::Apply {
                peer: A,
                action: cc.clone()
            }),
            "streaming {streaming}: {cmds:?}"
        );
        if streaming {
            assert!(matches!(e.handle_file_end(A), Receive::Drop { .. }), "streaming {streaming}");
        } else {
            assert!(e.content_wanted(A, &theirs).is_err());
        }
        e.take_commands();
        // The copy made, theirs is asked for again, to replace the edit.
        e.handle_action_done(A, cc, Ok(()));
        let cmds = e.take_commands();
        assert!(cmds.contains(&want(A, &[&theirs])), "streaming {streaming}: {cmds:?}");
        assert_eq!(e.handle_file_start(A, &theirs), Receive::Write { expected: Some(mine) });
    }
}

/// Our file kept against a deletion that missed its edit carries the
/// deletion's history too (`safety::resurrection`); a later edit made
/// elsewhere on top of that same content, by a peer that never heard of
/// the deletion, replaces it with no conflict copy: the content is history
/// that edit saw (found by the workload, faults seed 7200022204: a copy of
/// the older content on every node).
#[test]
fn an_edit_on_top_of_our_content_replaces_it_without_a_copy_whatever_else_ours_saw() {
    let base = file("b", 10, b"base");
    let mine = edited(&base, ME, 20, b"mine");
    let missed = deleted(&base, B, 30);
    let kept = crate::engine::safety::resurrection(&missed, &mine).expect("the edit stays against the delete");
    let theirs = edited(&mine, A, 40, b"theirs");
    let mut e = connected(std::slice::from_ref(&kept), &[A]);
    e.handle_message(A, index_msg(vec![theirs.clone()]));
    assert_eq!(e.take_commands(), vec![want(A, &[&theirs])]);
}

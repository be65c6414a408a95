//! Engine tests for content the writer could not send as asked: the
//! engine, not the writer, says what goes instead (issue 25: these three
//! fallbacks lived in transport/send.rs).

use super::*;

#[test]
fn our_copy_changed_since_it_was_asked_for_makes_it_unavailable() {
    let f = file("f", 10, b"v1");
    let mut e = connected(std::slice::from_ref(&f), &[A]);
    e.handle_unsent(A, Unsent::CopyChanged { entry: f.clone() });
    assert_eq!(
        e.take_commands(),
        vec![Command::Send {
            peer: A,
            msg: Message::Unavailable { path: f.path.clone() }
        }]
    );
}

#[test]
fn a_signature_that_does_not_parse_gets_the_whole_file() {
    let f = big("f", 10, 1);
    let mut e = connected(std::slice::from_ref(&f), &[A]);
    let reason = "trailing bytes".to_string();
    e.handle_unsent(A, Unsent::BadSignature { entry: f.clone(), reason });
    assert_eq!(
        e.take_commands(),
        vec![Command::SendContent {
            peer: A,
            entry: f,
            base: None
        }]
    );
}

#[test]
fn a_base_that_changed_before_it_was_signed_asks_for_the_whole_file() {
    let base = big("f", 10, 1);
    let theirs = big("f", 20, 2);
    let mut e = connected(std::slice::from_ref(&base), &[A]);
    e.handle_unsent(
        A,
        Unsent::BaseChanged {
            want: theirs.clone(),
            base,
        },
    );
    assert_eq!(e.take_commands(), vec![want(A, &[&theirs])]);
}

/// Back-pressure, decided by the engine from what the node says waits in
/// the peer's writer (issue 25: this lived in the node's `queue`): a delta
/// request whose signature would take the waiting signatures past
/// `MAX_QUEUED_SIGNATURE_BYTES` gets the whole file.
#[test]
fn a_signature_past_what_may_wait_gets_the_whole_file() {
    use crate::engine::back_pressure::MAX_QUEUED_SIGNATURE_BYTES;
    let f = big("f", 10, 1);
    let mut e = connected(std::slice::from_ref(&f), &[A]);
    let want_delta = |sig: usize| Message::WantDelta {
        path: f.path.clone(),
        hash: f.hash,
        base: Hash::of(b"their copy"),
        signature: vec![7; sig],
    };
    let content = |base: Option<(Hash, Vec<u8>)>| Command::SendContent {
        peer: A,
        entry: f.clone(),
        base,
    };
    e.handle_send_queue(A, 1, MAX_QUEUED_SIGNATURE_BYTES - 100);
    e.handle_message(A, want_delta(100));
    assert_eq!(e.take_commands(), vec![content(Some((Hash::of(b"their copy"), vec![7; 100])))]);
    // The one just queued counts, until the node tells otherwise.
    e.handle_message(A, want_delta(1));
    assert_eq!(e.take_commands(), vec![content(None)]);
    e.handle_send_queue(A, 0, 0);
    e.handle_message(A, want_delta(1));
    assert_eq!(e.take_commands(), vec![content(Some((Hash::of(b"their copy"), vec![7; 1])))]);
}

/// A peer with more jobs waiting than our index's size plus
/// `QUEUE_SLACK` asks faster than it reads: it is disconnected.
#[test]
fn a_peer_that_asks_faster_than_it_reads_is_disconnected() {
    use crate::engine::back_pressure::QUEUE_SLACK;
    let f = file("f", 10, b"x");
    let mut e = connected(std::slice::from_ref(&f), &[A]);
    let ask = Message::Want {
        files: vec![WantFile {
            path: f.path.clone(),
            hash: f.hash.into(),
        }],
    };
    let send = Command::SendContent {
        peer: A,
        entry: f.clone(),
        base: None,
    };
    // At the limit (our index holds one entry): served.
    e.handle_send_queue(A, QUEUE_SLACK, 0);
    e.handle_message(A, ask.clone());
    assert_eq!(e.take_commands(), vec![send.clone()]);
    // A disk action for the peer's version is no work for its writer:
    // counted, it would have closed the connection here.
    let d = dir("d", 20);
    e.handle_message(A, Message::Update { entries: vec![d.clone()] });
    let cmds = e.take_commands();
    assert!(matches!(&cmds[..], [Command::Apply { .. }]), "{cmds:?}");
    // The node tells what waits now; one more: served, and the
    // connection closed.
    e.handle_send_queue(A, QUEUE_SLACK + 1, 0);
    e.handle_message(A, ask.clone());
    let reason = format!("{} jobs queued: the peer asks faster than it reads", QUEUE_SLACK + 2);
    assert_eq!(e.take_commands(), vec![send, Command::Close { peer: A, reason }]);
}

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

//! A connection's messages into the engine: the input is a stream of frames
//! from one peer after its hello. Never a panic; every command is for that
//! peer; a second hello closes the connection.
#![no_main]

use dirsync::engine::{Command, Engine};
use dirsync::engine::index::Index;
use dirsync::wire::{self, Message, NodeId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const PEER: NodeId = NodeId(7);
    let mut engine = Engine::new(NodeId(1), Index::default());
    engine.handle_connected(PEER);
    engine.take_commands();
    let mut rest = data;
    while let Ok(Some((msg, used))) = wire::decode(rest) {
        rest = &rest[used..];
        let hello = matches!(msg, Message::Hello { .. });
        match msg {
            Message::FileStart { entry, .. } => {
                let accepted = engine.accept_content(PEER, &entry);
                engine.handle_received(PEER, entry, false, accepted.map(|_| 1));
            }
            Message::Chunk { .. } | Message::FileEnd => {}
            other => engine.handle_message(PEER, other),
        }
        let commands = engine.take_commands();
        for c in &commands {
            let peer = match c {
                Command::Send { peer, .. }
                | Command::SendContent { peer, .. }
                | Command::RequestDelta { peer, .. }
                | Command::Apply { peer, .. }
                | Command::Close { peer, .. } => *peer,
            };
            assert_eq!(peer, PEER);
        }
        if hello {
            assert!(commands.iter().any(|c| matches!(c, Command::Close { .. })));
        }
    }
});

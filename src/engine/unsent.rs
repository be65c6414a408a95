//! What goes to a peer instead of content this node could not send as
//! asked: our copy changed, found by the writer or when the piece map of
//! it was made (the peer hears `Unavailable` and asks elsewhere or later), the peer's signature does not parse (the whole
//! file goes), our base changed before it was signed (the whole file is
//! asked for).
//!
//! Owns: those three fallbacks. Must not: read the disk (the writer found
//! what it reports).

use super::{Command, Engine, Unsent};
use crate::wire::{Message, NodeId, WantFile};
use tracing::{debug, warn};

impl Engine {
    /// The writer for `peer` could not send what was asked (`unsent`).
    pub fn handle_unsent(&mut self, peer: NodeId, unsent: Unsent) {
        match unsent {
            Unsent::CopyChanged { entry } => {
                // Our next update announces what the path holds now.
                debug!(path = %entry.path, %peer, "our copy changed since it was asked for: unavailable");
                self.send(peer, Message::Unavailable { path: entry.path });
            }
            Unsent::BadSignature { entry, reason } => {
                warn!(%peer, path = %entry.path, error = %reason, "peer sent a bad signature; sending the whole file");
                self.commands.push(Command::SendContent { peer, entry, base: None });
            }
            Unsent::BaseChanged { want, .. } => {
                debug!(path = %want.path, %peer, "our copy changed before it was signed: asking for the whole file");
                let files = vec![WantFile {
                    path: want.path,
                    hash: want.hash.into(),
                }];
                self.send(peer, Message::Want { files });
            }
        }
    }
}

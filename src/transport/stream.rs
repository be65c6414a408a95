//! What every frame a connection writes goes through, and what it counts:
//! writing one message frame (`write_msg`), the size of a content chunk,
//! and a connection's traffic counters. A leaf of its own, so that the
//! connection (`conn`) and what it streams (`send`) both use it without
//! depending on each other.
//!
//! Owns: the frame write and `Traffic`. Must not: decide what to send.

use crate::wire::{self, Entry, Message};
use futures_lite::{AsyncWrite, AsyncWriteExt};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of file per `Chunk` when sending whole files.
pub const CHUNK: usize = 1024 * 1024;

/// Write one frame as a peer speaking protocol `version` reads it, and
/// flush it (an encrypted writer holds the last record until flushed);
/// returns its size on the wire.
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &Message, version: u32) -> io::Result<usize> {
    let frame = wire::encode_in(msg, version);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(frame.len())
}

/// One connection's content traffic, shared by the node (which queues
/// content and counts what arrives) and the writer (which sends it), for
/// `dirsync status` and the progress display.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Files (and their bytes) queued for sending and not yet sent.
    pub send_files: AtomicU64,
    pub send_bytes: AtomicU64,
    /// Content bytes on the wire so far, each way.
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl Traffic {
    /// `entry`'s content is queued for sending.
    pub fn queued(&self, entry: &Entry) {
        self.send_files.fetch_add(1, Ordering::Relaxed);
        self.send_bytes.fetch_add(entry.size, Ordering::Relaxed);
    }

    /// `n` more bytes of the file being sent went out.
    pub(super) fn progressed(&self, n: u64) {
        let _ = self
            .send_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(n)));
    }

    /// The file `entry` is done with (sent or not), `progressed` of its
    /// bytes counted already.
    pub(super) fn dequeued(&self, entry: &Entry, progressed: u64) {
        let _ = self
            .send_files
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        self.progressed(entry.size.saturating_sub(progressed));
    }
}

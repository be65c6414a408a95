//! What a connection's writer streams for a job of content: a whole file
//! or a delta (`send_content`), a piece (`send_piece`), a delta request
//! with our copy's signature (`request_delta`), each paced by the control
//! messages waiting and the send limit (`Pacing`).
//!
//! Owns: reading what is sent from disk and framing it. Must not: decide
//! what to send (the engine does): content that cannot be sent as asked
//! is reported (`Unsent`), and the engine says what goes instead.

use crate::engine::Unsent;
use crate::fs::delta::{read_segment, segment_count, FileSignature};
use crate::fs::pieces::all_zero;
use crate::fs::store::Store;
use crate::transport::conn::Sending;
use crate::transport::jobs::{JobReceiver, PieceJob};
use crate::transport::limits::Queued;
use crate::transport::net::Net;
use crate::transport::rate::RateLimit;
use crate::transport::stream::{write_msg, Traffic, CHUNK};
use crate::wire::{ContentMode, Entry, FileHead, Hash, Message, NodeId};
use futures_lite::AsyncWrite;
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use tracing::{debug, info};

/// What a file's chunks make way for and wait on: control messages queued
/// meanwhile go between them (the peer reads each frame on its own), and
/// the send limit (`--max-send-rate`) spaces them.
pub(super) struct Pacing<'a, N: Net> {
    pub net: &'a N,
    pub jobs: &'a JobReceiver,
    pub queued: &'a Queued,
    pub limit: Option<&'a RateLimit>,
    /// The protocol version spoken with the peer: how every frame is
    /// written (`wire::encode_in`).
    pub version: u32,
}

impl<N: Net> Pacing<'_, N> {
    /// Before `n` bytes of content go: send the control messages waiting,
    /// then wait the limit's share, sending any that come meanwhile.
    async fn before_content<W: AsyncWrite + Unpin>(&self, w: &mut W, n: u64) -> io::Result<()> {
        while let Some(msg) = self.jobs.control_now() {
            self.send_control(w, &msg).await?;
        }
        let Some(limit) = self.limit else { return Ok(()) };
        let until = self.net.now() + limit.take(n, self.net.now());
        loop {
            let left = match until.duration_since(self.net.now()) {
                Ok(d) if !d.is_zero() => d,
                _ => return Ok(()),
            };
            let control = async { self.jobs.control().await };
            let waited = async {
                self.net.sleep(left).await;
                None
            };
            match futures_lite::future::or(control, waited).await {
                Some(msg) => self.send_control(w, &msg).await?,
                None => return Ok(()),
            }
        }
    }

    async fn send_control<W: AsyncWrite + Unpin>(&self, w: &mut W, msg: &Message) -> io::Result<()> {
        write_msg(w, msg, self.version).await?;
        self.queued.done(0);
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn send_content<N: Net, W: AsyncWrite + Unpin>(
    w: &mut W,
    store: &Store,
    peer: NodeId,
    entry: Entry,
    base: Option<(Hash, Vec<u8>)>,
    traffic: &Traffic,
    progressed: &mut u64,
    pacing: Pacing<'_, N>,
) -> io::Result<Option<Unsent>> {
    let Some(mut file) = store.open_version(&entry) else {
        return Ok(Some(Unsent::CopyChanged { entry }));
    };
    let signature = match base {
        Some((base_hash, bytes)) => match FileSignature::from_bytes(&bytes) {
            Ok(sig) => Some((base_hash, sig)),
            Err(e) => {
                let reason = e.to_string();
                return Ok(Some(Unsent::BadSignature { entry, reason }));
            }
        },
        None => None,
    };
    let mode = if signature.is_some() { "delta" } else { "full" };
    let content = match &signature {
        Some((base, _)) => ContentMode::Delta { base: *base },
        None => ContentMode::Full,
    };
    let mut wire_bytes = write_msg(
        w,
        &Message::FileStart {
            entry: entry.clone(),
            content,
        },
        pacing.version,
    )
    .await?;
    match signature {
        Some((_, sig)) => {
            for i in 0..segment_count(entry.size) {
                let data = read_segment(&mut file, entry.size, i)?;
                let delta = sig.diff_segment(i as usize, &data).map_err(io::Error::other)?;
                pacing.before_content(w, delta.len() as u64).await?;
                let n = write_msg(w, &Message::Chunk { data: delta }, pacing.version).await?;
                traffic.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                traffic.progressed(data.len() as u64);
                *progressed += data.len() as u64;
                wire_bytes += n;
            }
        }
        None => {
            let mut remaining = entry.size;
            while remaining > 0 {
                // Each chunk its own buffer, of its own size: the message
                // owns it (no copy), and a small file does not clear a
                // whole CHUNK (that was a quarter of a sender's CPU in an
                // initial sync of small files).
                let n = (remaining as usize).min(CHUNK);
                let mut data = vec![0u8; n];
                file.read_exact(&mut data)?;
                remaining -= n as u64;
                pacing.before_content(w, n as u64).await?;
                let sent = write_msg(w, &Message::Chunk { data }, pacing.version).await?;
                traffic.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
                traffic.progressed(n as u64);
                *progressed += n as u64;
                wire_bytes += sent;
            }
        }
    }
    wire_bytes += write_msg(w, &Message::FileEnd, pacing.version).await?;
    info!(path = %entry.path, %peer, mode, wire_bytes, "sent");
    Ok(None)
}

/// At most this many files, and this much content, in one `Files` frame:
/// the receiving loop writes a frame's files in one turn, so a frame stays
/// a few milliseconds of its work.
pub(super) const FILES_PER_FRAME: usize = 128;
pub(super) const FILES_FRAME_BYTES: u64 = 512 * 1024;

/// Send small files whole in one `Files` frame (protocol 7), each read
/// from our copy while it holds the version asked for; the ones it no
/// longer holds are reported (`Unsent`), for the engine to answer.
pub(super) async fn send_files<N: Net, W: AsyncWrite + Unpin>(
    w: &mut W,
    store: &Store,
    peer: NodeId,
    entries: Vec<Entry>,
    traffic: &Traffic,
    pacing: Pacing<'_, N>,
) -> io::Result<Vec<Unsent>> {
    let mut unsent = Vec::new();
    let mut sent = Vec::with_capacity(entries.len());
    let mut contents = Vec::with_capacity(entries.iter().map(|e| e.size as usize).sum());
    for entry in entries {
        let at = contents.len();
        contents.resize(at + entry.size as usize, 0);
        let read = store.open_version(&entry).map(|mut file| file.read_exact(&mut contents[at..]));
        match read {
            Some(Ok(())) => sent.push(entry),
            // Gone, changed, or shorter than its version since it was asked for.
            _ => {
                contents.truncate(at);
                traffic.dequeued(&entry, 0);
                unsent.push(Unsent::CopyChanged { entry });
            }
        }
    }
    if sent.is_empty() {
        return Ok(unsent);
    }
    pacing.before_content(w, contents.len() as u64).await?;
    let files = sent
        .iter()
        .map(|e| FileHead {
            path: e.path.clone(),
            size: e.size,
        })
        .collect();
    let wire_bytes = write_msg(w, &Message::Files { files, contents }, pacing.version).await?;
    traffic.bytes_sent.fetch_add(wire_bytes as u64, Ordering::Relaxed);
    for entry in &sent {
        traffic.dequeued(entry, 0);
        debug!(path = %entry.path, %peer, "sent");
    }
    info!(%peer, files = sent.len(), wire_bytes, "sent small files");
    Ok(unsent)
}

/// Bytes of a piece per `Piece` frame: a node serving pieces to seven
/// peers holds one frame per connection, and receives one from each.
const PIECE_FRAME: usize = 256 * 1024;

/// Send a piece of a file as `Piece` frames of at most a chunk, from the
/// temp file it is being received into, or else our copy; `Unavailable`
/// if neither holds it any more (the asker verifies what it gets, so a
/// copy that changed meanwhile costs only that piece).
pub(super) async fn send_piece<N: Net, W: AsyncWrite + Unpin>(
    w: &mut W,
    store: &Store,
    piece: PieceJob,
    traffic: &Traffic,
    pacing: Pacing<'_, N>,
    sending: &Sending,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let entry = &piece.entry;
    let file = piece
        .temp
        .as_ref()
        .and_then(|t| File::open(t).ok())
        .or_else(|| store.open_version(entry));
    let Some(file) = file else {
        return write_msg(w, &Message::Unavailable { path: entry.path.clone() }, pacing.version)
            .await
            .map(|_| ());
    };
    let mut sent = 0u64;
    let mut frame_end = 0u64;
    while sent < piece.len {
        let n = (piece.len - sent).min(PIECE_FRAME as u64);
        let mut data = vec![0u8; n as usize];
        file.read_exact_at(&mut data, piece.offset + sent)?;
        // To a peer that takes it, runs of zeros are not sent: the frame
        // holds the data between them, at its offset.
        let (skip, keep) = match sending.sparse_pieces {
            true => data_span(&data),
            false => (0, data.len()),
        };
        if keep > skip {
            data.truncate(keep);
            data.drain(..skip);
            if sending.corrupt_pieces {
                data[0] ^= 0xff;
            }
            pacing.before_content(w, data.len() as u64).await?;
            let offset = sent + skip as u64;
            frame_end = offset + data.len() as u64;
            let msg = Message::Piece {
                path: entry.path.clone(),
                hash: entry.hash,
                index: piece.index,
                offset,
                data,
            };
            let bytes = write_msg(w, &msg, pacing.version).await?;
            traffic.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        sent += n;
    }
    if frame_end < piece.len {
        // The piece ends in zeros: an empty frame at its end says so.
        let msg = Message::Piece {
            path: entry.path.clone(),
            hash: entry.hash,
            index: piece.index,
            offset: piece.len,
            data: Vec::new(),
        };
        let bytes = write_msg(w, &msg, pacing.version).await?;
        traffic.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    debug!(path = %entry.path, piece = piece.index, "sent a piece");
    Ok(())
}

/// Where the data of a frame lies: from the first to past the last
/// 4 KiB block that is not all zeros (`(0, 0)` if none is).
fn data_span(data: &[u8]) -> (usize, usize) {
    const BLOCK: usize = 4096;
    let blocks = data.len().div_ceil(BLOCK);
    let has_data = |b: usize| !all_zero(&data[b * BLOCK..((b + 1) * BLOCK).min(data.len())]);
    let Some(first) = (0..blocks).find(|b| has_data(*b)) else {
        return (0, 0);
    };
    let last = (0..blocks).rev().find(|b| has_data(*b)).unwrap_or(first);
    (first * BLOCK, ((last + 1) * BLOCK).min(data.len()))
}

/// Sign our copy `base` and ask for `want` as a delta against it; what
/// cannot be (`base` changed meanwhile) is reported, not sent.
pub(super) async fn request_delta<W: AsyncWrite + Unpin>(
    w: &mut W,
    store: &Store,
    want: Entry,
    base: Entry,
    version: u32,
) -> io::Result<Option<Unsent>> {
    let signature = store
        .open_version(&base)
        .and_then(|mut f| FileSignature::of_file(&mut f, base.size).ok());
    let Some(sig) = signature else {
        return Ok(Some(Unsent::BaseChanged { want, base }));
    };
    let msg = Message::WantDelta {
        path: want.path,
        hash: want.hash,
        base: base.hash,
        signature: sig.to_bytes(),
    };
    write_msg(w, &msg, version).await.map(|_| None)
}

//! One peer connection's tasks: the handshake, the reader that turns frames
//! into node events (`run_reader`), and the writer that takes the queued
//! jobs in turn (`run_writer`; what it streams for a job of content is in
//! `send`).
//!
//! Owns: the bytes of a connection. Must not: decide what to send (the
//! engine does) or write into the synced directory (the node does).

use crate::engine::Unsent;
use crate::fs::store::Store;
use crate::transport::jobs::{Job, JobReceiver};
use crate::transport::limits::Queued;
use crate::transport::net::Net;
use crate::transport::rate::RateLimit;
use crate::transport::secure::{self, Connection};
use crate::transport::send::{request_delta, send_content, send_files, send_piece, Pacing, FILES_FRAME_BYTES, FILES_PER_FRAME};
pub use crate::transport::stream::{write_msg, Traffic, CHUNK};
use crate::wire::{
    self, common_version, Message, NodeId, WireError, FEATURES, FEATURE_SPARSE_PIECES, LEN_PREFIX, MAX_BATCHED_FILE,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Why a connection to ourselves is refused.
pub const OWN_ID: &str = "that is my own node id";
/// How long a new connection may take to say hello (and, with a cluster
/// key, to finish the key handshake before it).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame accepted before the handshake is done: a hello or a
/// refusal is a few hundred bytes, so an unknown peer cannot make us hold
/// megabytes per half-open connection.
pub const MAX_HELLO: u64 = 16 * 1024;
/// A writer with nothing to send for this long sends a `Ping`.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A reader that receives nothing for this long declares the peer dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    #[error("refused by peer: {0}")]
    RefusedByPeer(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("no hello within {0:?}")]
    Timeout(Duration),
    #[error("nothing received for {0:?}; the peer is gone")]
    Idle(Duration),
    #[error("key handshake: {0}")]
    Secure(#[from] secure::SecureError),
}

impl ConnError {
    /// A refusal worth a warning (either side said no, or the keys differ),
    /// as opposed to a connection that merely failed.
    pub fn is_refusal(&self) -> bool {
        match self {
            ConnError::Refused(_) | ConnError::RefusedByPeer(_) => true,
            ConnError::Secure(e) => e.is_key_refusal(),
            _ => false,
        }
    }
}

/// Read one frame, or fail with `Idle` if nothing at all arrives within
/// `IDLE_TIMEOUT` (the peer pings when it has nothing to say).
pub async fn read_frame_or_idle<N: Net, R: AsyncRead + Unpin>(net: &N, r: &mut R) -> Result<(Message, usize), ConnError> {
    let read = async { Some(read_frame(r).await) };
    let idle = async {
        net.sleep(IDLE_TIMEOUT).await;
        None
    };
    futures_lite::future::or(read, idle)
        .await
        .unwrap_or(Err(ConnError::Idle(IDLE_TIMEOUT)))
}

/// Read one frame. Returns the message and the bytes it took on the wire.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Message, usize), ConnError> {
    read_frame_max(r, wire::MAX_FRAME).await
}

/// Read one frame whose body is at most `max` bytes (`MAX_FRAME` at most).
pub async fn read_frame_max<R: AsyncRead + Unpin>(r: &mut R, max: u64) -> Result<(Message, usize), ConnError> {
    let mut prefix = [0u8; LEN_PREFIX];
    if let Err(e) = r.read_exact(&mut prefix).await {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            ConnError::Closed
        } else {
            e.into()
        });
    }
    let len = wire::body_len(prefix)?;
    if len as u64 > max {
        return Err(WireError::TooLarge(len as u64).into());
    }
    // Grow the buffer as bytes arrive rather than trusting the length, so a
    // peer that claims 16 MiB and sends nothing costs nothing; and grow it
    // by doubling only up to the length, never past it (read_to_end's
    // doubling could reserve nearly twice the frame).
    let mut body: Vec<u8> = Vec::new();
    while body.len() < len {
        if body.len() == body.capacity() {
            let target = (body.capacity() * 2).max(64 * 1024).min(len);
            body.reserve_exact(target - body.len());
        }
        let start = body.len();
        let end = body.capacity().min(len);
        body.resize(end, 0);
        let n = r.read(&mut body[start..]).await?;
        body.truncate(start + n);
        if n == 0 {
            return Err(ConnError::Closed);
        }
    }
    Ok((wire::decode_body(body)?, LEN_PREFIX + len))
}

/// What a connection's reader hands the node.
#[derive(Debug)]
// Nearly every value is a frame: boxing it would add an allocation per
// frame to save space only on the rare end of a connection.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// A frame, and the bytes it took on the wire.
    Frame { msg: Message, bytes: usize },
    /// The connection ended (the reason); `malformed`: by a frame that
    /// does not decode.
    Closed { reason: String, malformed: bool },
}

/// Run a connection's reader until the connection ends, `stop` closes, or
/// the node stops taking events. Each frame first takes a place in
/// `credit` (the node frees it when it has handled the frame), so at most
/// that channel's capacity of frames wait in memory across all peers.
#[allow(clippy::too_many_arguments)]
pub async fn run_reader<N: Net, R: AsyncRead + Unpin, E>(
    net: N,
    mut reader: R,
    stop: async_channel::Receiver<()>,
    credit: async_channel::Sender<()>,
    events: async_channel::Sender<E>,
    event: impl Fn(Inbound) -> E,
    recv_limit: Option<Arc<RateLimit>>,
) {
    loop {
        let read = async { Some(read_frame_or_idle(&net, &mut reader).await) };
        let stopped = async {
            let _ = stop.recv().await;
            None
        };
        let inbound = match futures_lite::future::or(read, stopped).await {
            None => return,
            Some(Ok((msg, bytes))) => {
                if let Some(limit) = recv_limit.as_ref().filter(|_| msg.is_content()) {
                    // `--max-recv-rate`: reading no further until this
                    // chunk's (or piece's) share of the rate has passed
                    // holds the sender back through TCP.
                    let wait = limit.take(bytes as u64, net.now());
                    let waited = async {
                        net.sleep(wait).await;
                        true
                    };
                    let stopped = async {
                        let _ = stop.recv().await;
                        false
                    };
                    if !wait.is_zero() && !futures_lite::future::or(waited, stopped).await {
                        return;
                    }
                }
                if credit.send(()).await.is_err() {
                    return;
                }
                Inbound::Frame { msg, bytes }
            }
            Some(Err(e)) => Inbound::Closed {
                reason: e.to_string(),
                malformed: matches!(e, ConnError::Wire(_)),
            },
        };
        let closed = matches!(inbound, Inbound::Closed { .. });
        if events.send(event(inbound)).await.is_err() || closed {
            return;
        }
    }
}

/// What a peer said in its hello.
#[derive(Debug, Clone, Copy)]
pub struct PeerHello {
    pub node: NodeId,
    pub listen_port: u16,
    pub device: NodeId,
    /// The peer takes `Piece` frames that skip zeros (`FEATURE_SPARSE_PIECES`).
    pub sparse_pieces: bool,
    /// The protocol version spoken with the peer (`wire::common_version`).
    pub version: u32,
}

/// Exchange hellos. Refuses (and tells the peer why) a peer that speaks
/// no version we speak, or one using our own node id.
pub async fn handshake<N: Net>(
    net: &N,
    conn: &mut Connection<N>,
    me: NodeId,
    device: NodeId,
    listen_port: u16,
) -> Result<PeerHello, ConnError> {
    let hello = Message::Hello {
        version: OLDEST_PROTOCOL_VERSION,
        node: me,
        listen_port,
        device,
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        newest: PROTOCOL_VERSION,
    };
    write_msg(&mut conn.writer, &hello, OLDEST_PROTOCOL_VERSION).await?;
    let read = async { Some(read_frame_max(&mut conn.reader, MAX_HELLO).await) };
    let timeout = async {
        net.sleep(HANDSHAKE_TIMEOUT).await;
        None
    };
    let first = match futures_lite::future::or(read, timeout).await {
        None => return Err(ConnError::Timeout(HANDSHAKE_TIMEOUT)),
        // A keyed dialer's first bytes, read as a frame length.
        Some(Err(ConnError::Wire(WireError::TooLarge(n)))) if n == u64::from_be_bytes(secure::MAGIC) => {
            return Err(ConnError::Refused(
                "the peer requires a cluster key and this node has none (--key-file)".into(),
            ))
        }
        Some(r) => r?,
    };
    let refuse = |reason: String| async move {
        let _ = write_msg(
            &mut conn.writer,
            &Message::Refuse { reason: reason.clone() },
            OLDEST_PROTOCOL_VERSION,
        )
        .await;
        let _ = conn.writer.close().await;
        Err(ConnError::Refused(reason))
    };
    match first.0 {
        Message::Hello { version, newest, .. } if common_version(version, newest).is_none() => {
            let theirs = match newest.max(version) {
                n if n == version => version.to_string(),
                n => format!("{version} to {n}"),
            };
            refuse(format!(
                "protocol version {theirs} is not spoken here (this node speaks {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION})"
            ))
            .await
        }
        Message::Hello { node, .. } if node == me => refuse(OWN_ID.into()).await,
        Message::Hello {
            node,
            listen_port,
            device,
            features,
            version,
            newest,
        } => Ok(PeerHello {
            node,
            listen_port,
            device,
            sparse_pieces: features.iter().any(|f| f == FEATURE_SPARSE_PIECES),
            version: common_version(version, newest).unwrap_or(version),
        }),
        Message::Refuse { reason } => Err(ConnError::RefusedByPeer(printable(&reason))),
        other => refuse(format!("expected hello, got {}", other.name())).await,
    }
}

/// A peer's free text made safe for one log line: control characters
/// escaped (no forged lines), at most 200 characters.
pub fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(200).flat_map(char::escape_default).collect();
    if text.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

/// How a connection's writer sends content.
#[derive(Debug, Clone, Default)]
pub struct Sending {
    /// The node's send limit (`--max-send-rate`), shared by every
    /// connection.
    pub limit: Option<Arc<RateLimit>>,
    /// Flip a byte of every piece sent: the simulation's lying peer
    /// (never set in production).
    pub corrupt_pieces: bool,
    /// The peer takes piece frames that skip zeros.
    pub sparse_pieces: bool,
    /// The protocol version spoken with the peer: how every frame is
    /// written (`wire::encode_in`).
    pub version: u32,
}

/// Run a connection's writer until its job queue closes, a write fails, or
/// `stop` closes (the node dropped the connection: a write blocked on a
/// peer that does not read must not keep the socket and the queue alive).
/// When idle for `PING_INTERVAL` it sends a `Ping`, so the peer's reader
/// can tell a quiet connection from a dead one. Each job is uncounted from
/// `queued` when done. Content it cannot send as asked is reported as
/// `unsent(..)` on `events`, for the engine to decide what goes instead.
#[allow(clippy::too_many_arguments)]
pub async fn run_writer<N: Net, W: AsyncWrite + Unpin, E>(
    net: N,
    mut w: W,
    jobs: JobReceiver,
    store: Store,
    peer: NodeId,
    stop: async_channel::Receiver<()>,
    queued: Arc<Queued>,
    traffic: Arc<Traffic>,
    sending: Sending,
    events: async_channel::Sender<E>,
    unsent: impl Fn(Unsent) -> E,
) {
    let stopped = async {
        let _ = stop.recv().await;
    };
    let work = async {
        loop {
            let next = async { Some(jobs.next().await) };
            let idle = async {
                net.sleep(PING_INTERVAL).await;
                None
            };
            let (job, counted) = match futures_lite::future::or(next, idle).await {
                Some(Some(job)) => (job, true),
                Some(None) => break, // the node dropped this connection
                None => (Job::Send(Message::Ping), false),
            };
            let sig = job.signature_bytes();
            let pacing = || Pacing {
                net: &net,
                jobs: &jobs,
                queued: &queued,
                limit: sending.limit.as_deref(),
                version: sending.version,
            };
            let result = match job {
                Job::Send(msg) => write_msg(&mut w, &msg, sending.version).await.map(|_| Vec::new()),
                Job::Content { entry, base: None } if entry.size <= MAX_BATCHED_FILE => {
                    // Small files go many to a frame: those waiting now
                    // join this one.
                    let mut batch = vec![entry];
                    let mut bytes = batch[0].size;
                    while batch.len() < FILES_PER_FRAME && bytes < FILES_FRAME_BYTES {
                        let small = |j: &Job| matches!(j, Job::Content { entry, base: None } if entry.size <= MAX_BATCHED_FILE);
                        let Some(Job::Content { entry, .. }) = jobs.bulk_now_if(small) else {
                            break;
                        };
                        bytes += entry.size;
                        batch.push(entry);
                        queued.done(0);
                    }
                    send_files(&mut w, &store, peer, batch, &traffic, pacing()).await
                }
                Job::Content { entry, base } => {
                    let size_of = entry.clone();
                    let mut progressed = 0;
                    let r = send_content(&mut w, &store, peer, entry, base, &traffic, &mut progressed, pacing()).await;
                    traffic.dequeued(&size_of, progressed);
                    r.map(Vec::from_iter)
                }
                Job::RequestDelta { want, base } => request_delta(&mut w, &store, want, base, sending.version).await.map(Vec::from_iter),
                Job::Piece(piece) => send_piece(&mut w, &store, piece, &traffic, pacing(), &sending)
                    .await
                    .map(|_| Vec::new()),
            };
            if counted {
                queued.done(sig);
            }
            match result {
                Ok(what) => {
                    for what in what {
                        // The node's loop may be gone (shutting down): nothing to tell.
                        let _ = events.send(unsent(what)).await;
                    }
                }
                Err(e) => {
                    warn!(%peer, error = %e, "write failed; closing connection");
                    break;
                }
            }
        }
        let _ = w.close().await;
    };
    futures_lite::future::or(work, stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: Vec<u8>, max: u64) -> Result<(Message, usize), ConnError> {
        futures_lite::future::block_on(read_frame_max(&mut futures_lite::io::Cursor::new(bytes), max))
    }

    #[test]
    fn peer_text_is_one_short_log_line() {
        assert_eq!(printable("no key"), "no key");
        assert_eq!(printable("a\nINFO forged line\u{1b}[31m"), "a\\nINFO forged line\\u{1b}[31m");
        let long = printable(&"x".repeat(10_000));
        assert!(long.chars().count() <= 201 && !long.contains('\n'));
    }

    #[test]
    fn frames_read_whole_and_lies_fail() {
        let big = Message::Chunk {
            data: (0..300_000u32).map(|i| i as u8).collect(),
        };
        let frame = wire::encode(&big);
        assert_eq!(read(frame.clone(), wire::MAX_FRAME).unwrap(), (big, frame.len()));
        // Cut short: the peer closed mid-frame.
        assert!(matches!(
            read(frame[..frame.len() - 1].to_vec(), wire::MAX_FRAME),
            Err(ConnError::Closed)
        ));
        // A length far beyond what follows, within the cap.
        let mut lie = (16u64 * 1024 * 1024).to_be_bytes().to_vec();
        lie.extend_from_slice(&[0; 100]);
        assert!(matches!(read(lie, wire::MAX_FRAME), Err(ConnError::Closed)));
        // Over this phase's cap (a hello is small), and over the frame cap.
        assert!(matches!(read(frame, MAX_HELLO), Err(ConnError::Wire(WireError::TooLarge(_)))));
        assert!(matches!(
            read((1u64 << 62).to_be_bytes().to_vec(), wire::MAX_FRAME),
            Err(ConnError::Wire(WireError::TooLarge(_)))
        ));
    }
}

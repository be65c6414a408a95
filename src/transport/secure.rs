//! The transport layer under every connection: plain bytes without a
//! cluster key, Noise (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, the `snow`
//! crate; its cipher is ring's, see Cargo.toml) with one. It runs after the
//! TCP connect and before the hello, for the production `Net` and the
//! simulated one alike, since it only wraps a connection's read and write
//! halves.
//!
//! With a key, the dialer sends `MAGIC` (8 bytes), then the first Noise
//! handshake message; the listener answers with the second. Each handshake
//! message is `[u16 BE length][message]`. A listener whose key differs
//! cannot authenticate the first message: it answers `REFUSED` (the length
//! 0xFFFF) and closes. After the handshake every byte travels in records
//! `[u16 BE length][ciphertext + 16-byte tag]` of at most 65535 bytes, each
//! direction with its own nonce counter (snow's `StatelessTransportState`,
//! shared by both halves). A record that fails to authenticate ends the
//! connection.
//!
//! Owns: the handshake and the record layer. Must not: parse messages (the
//! frames inside are the wire module's) or hold the key longer than the
//! handshake.

use crate::transport::key::ClusterKey;
use crate::transport::net::{Net, Socket};
use crate::wire::{self, Message, MAX_FRAME};
use futures_lite::{ready, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use snow::StatelessTransportState;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The Noise protocol every keyed connection speaks.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// What a keyed dialer sends first. As a plain frame length it is far over
/// `MAX_FRAME`, so a node without a key recognises it at once.
pub const MAGIC: [u8; 8] = *b"dsynckey";
/// The listener's answer when the dialer's first message did not
/// authenticate. Never a valid handshake length (those are 48 bytes), and
/// never the start of a plain frame (which starts with 0x0000).
pub const REFUSED: u16 = 0xFFFF;
/// Bound into the handshake hash: both sides must mean this protocol.
const PROLOGUE: &[u8] = b"dirsync noise v1";
/// Largest record on the wire (the Noise message limit).
pub const MAX_RECORD: usize = 65535;
const TAG: usize = 16;
/// Plaintext bytes per record.
pub const MAX_PLAIN: usize = MAX_RECORD - TAG;
/// Longest handshake message accepted (NNpsk0's are 48 bytes).
const MAX_HANDSHAKE_MSG: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("the peer's cluster key differs from ours: its handshake did not authenticate")]
    KeyMismatch,
    #[error("the peer refused our cluster key: its key differs")]
    RefusedByPeer,
    #[error("the peer has no cluster key (it speaks plain dirsync); this node requires one")]
    PeerHasNoKey,
    #[error("the peer closed the connection during the key handshake (its key differs, or it is busy)")]
    ClosedInHandshake,
    #[error("not a dirsync key handshake")]
    NotDirsync,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
}

impl SecureError {
    /// A refusal for key reasons (logged as a warning, not a network hiccup).
    pub fn is_key_refusal(&self) -> bool {
        matches!(
            self,
            SecureError::KeyMismatch | SecureError::RefusedByPeer | SecureError::PeerHasNoKey | SecureError::ClosedInHandshake
        )
    }
}

/// A connection after the transport layer: what the hello and everything
/// after it travel over.
pub struct Connection<N: Net> {
    pub reader: Reader<N::Reader>,
    pub writer: Writer<N::Writer>,
    pub peer: SocketAddr,
}

/// Run the transport handshake on a fresh connection. Without a key the
/// connection passes through unchanged. `initiator`: we dialed.
pub async fn establish<N: Net>(socket: Socket<N>, key: Option<&ClusterKey>, initiator: bool) -> Result<Connection<N>, SecureError> {
    let (reader, writer) = secure_halves(socket.reader, socket.writer, key, initiator).await?;
    Ok(Connection {
        reader,
        writer,
        peer: socket.peer,
    })
}

/// `establish` on any pair of halves.
pub async fn secure_halves<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut reader: R,
    mut writer: W,
    key: Option<&ClusterKey>,
    initiator: bool,
) -> Result<(Reader<R>, Writer<W>), SecureError> {
    let Some(key) = key else {
        return Ok((Reader { inner: reader, rx: None }, Writer { inner: writer, tx: None }));
    };
    let psk = key.psk();
    let builder = snow::Builder::new(NOISE_PARAMS.parse()?).prologue(PROLOGUE)?.psk(0, &psk)?;
    let state = if initiator {
        initiate(builder.build_initiator()?, &mut reader, &mut writer).await?
    } else {
        respond(builder.build_responder()?, &mut reader, &mut writer).await?
    };
    let state = Arc::new(state);
    Ok((
        Reader {
            inner: reader,
            rx: Some(Box::new(Rx::new(state.clone()))),
        },
        Writer {
            inner: writer,
            tx: Some(Box::new(Tx::new(state))),
        },
    ))
}

/// The dialer's side of the key handshake: our message (after `MAGIC`),
/// then the responder's.
async fn initiate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut hs: snow::HandshakeState,
    reader: &mut R,
    writer: &mut W,
) -> Result<snow::StatelessTransportState, SecureError> {
    let mut buf = [0u8; MAX_HANDSHAKE_MSG];
    let n = hs.write_message(&[], &mut buf)?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&buf[..n]);
    writer.write_all(&out).await?;
    writer.flush().await?;
    let mut len = [0u8; 2];
    read_or_closed(reader, &mut len).await?;
    let len = u16::from_be_bytes(len);
    match len {
        REFUSED => return Err(SecureError::RefusedByPeer),
        0 => return Err(SecureError::PeerHasNoKey),
        n if n as usize > MAX_HANDSHAKE_MSG => return Err(SecureError::NotDirsync),
        _ => {}
    }
    let msg = &mut buf[..len as usize];
    read_or_closed(reader, msg).await?;
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    hs.read_message(msg, &mut payload).map_err(|_| SecureError::KeyMismatch)?;
    Ok(hs.into_stateless_transport_mode()?)
}

/// The accepting side: the dialer's message (a keyless hello is answered
/// with a refusal it understands), then ours, or `REFUSED` for another key.
async fn respond<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut hs: snow::HandshakeState,
    reader: &mut R,
    writer: &mut W,
) -> Result<snow::StatelessTransportState, SecureError> {
    let mut magic = [0u8; 8];
    read_or_closed(reader, &mut magic).await?;
    if magic != MAGIC {
        if u64::from_be_bytes(magic) <= MAX_FRAME {
            // A node without a key sent its hello: tell it why, in its terms.
            let refuse = Message::Refuse {
                reason: "this node requires a cluster key (--key-file); this connection has none".into(),
            };
            let _ = writer.write_all(&wire::encode(&refuse)).await;
            let _ = writer.close().await;
            return Err(SecureError::PeerHasNoKey);
        }
        return Err(SecureError::NotDirsync);
    }
    let mut len = [0u8; 2];
    read_or_closed(reader, &mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_HANDSHAKE_MSG {
        return Err(SecureError::NotDirsync);
    }
    let mut buf = [0u8; MAX_HANDSHAKE_MSG];
    let msg = &mut buf[..len];
    read_or_closed(reader, msg).await?;
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    if hs.read_message(msg, &mut payload).is_err() {
        let _ = writer.write_all(&REFUSED.to_be_bytes()).await;
        let _ = writer.close().await;
        return Err(SecureError::KeyMismatch);
    }
    let mut out = [0u8; MAX_HANDSHAKE_MSG + 2];
    let n = hs.write_message(&[], &mut out[2..])?;
    out[..2].copy_from_slice(&(n as u16).to_be_bytes());
    writer.write_all(&out[..n + 2]).await?;
    writer.flush().await?;
    Ok(hs.into_stateless_transport_mode()?)
}

async fn read_or_closed<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), SecureError> {
    r.read_exact(buf).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SecureError::ClosedInHandshake
        } else {
            e.into()
        }
    })
}

struct Rx {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    hdr: [u8; 2],
    hdr_got: usize,
    /// The record being read (`rec_len` bytes of it, known once
    /// `hdr_got == 2`). Buffers are allocated once at their full size.
    rec: Vec<u8>,
    rec_len: usize,
    rec_got: usize,
    /// Decrypted bytes; `plain[plain_pos..plain_len]` not yet handed out.
    plain: Vec<u8>,
    plain_len: usize,
    plain_pos: usize,
    /// A record failed: every later read fails too.
    failed: bool,
}

impl Rx {
    fn new(state: Arc<StatelessTransportState>) -> Rx {
        Rx {
            state,
            nonce: 0,
            hdr: [0; 2],
            hdr_got: 0,
            rec: vec![0; MAX_RECORD],
            rec_len: 0,
            rec_got: 0,
            plain: vec![0; MAX_PLAIN],
            plain_len: 0,
            plain_pos: 0,
            failed: false,
        }
    }
}

/// The read half: plain, or records decrypted and checked one by one.
pub struct Reader<R> {
    inner: R,
    rx: Option<Box<Rx>>,
}

impl<R> Reader<R> {
    /// A reader of records sealed by the peer of `state` (for tests and
    /// fuzzing; connections get theirs from `secure`).
    pub fn with_state(inner: R, state: StatelessTransportState) -> Reader<R> {
        Reader {
            inner,
            rx: Some(Box::new(Rx::new(Arc::new(state)))),
        }
    }
}

fn bad(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<R: AsyncRead + Unpin> AsyncRead for Reader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(rx) = this.rx.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if rx.failed {
                return Poll::Ready(Err(bad("an earlier record failed to authenticate")));
            }
            if rx.plain_pos < rx.plain_len {
                let n = buf.len().min(rx.plain_len - rx.plain_pos);
                buf[..n].copy_from_slice(&rx.plain[rx.plain_pos..rx.plain_pos + n]);
                rx.plain_pos += n;
                return Poll::Ready(Ok(n));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            while rx.hdr_got < 2 {
                let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rx.hdr[rx.hdr_got..]))?;
                if n == 0 {
                    return Poll::Ready(if rx.hdr_got == 0 {
                        Ok(0)
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    });
                }
                rx.hdr_got += n;
                if rx.hdr_got == 2 {
                    let len = u16::from_be_bytes(rx.hdr) as usize;
                    if len < TAG {
                        rx.failed = true;
                        return Poll::Ready(Err(bad("record shorter than its tag")));
                    }
                    rx.rec_len = len;
                    rx.rec_got = 0;
                }
            }
            while rx.rec_got < rx.rec_len {
                let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rx.rec[rx.rec_got..rx.rec_len]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                rx.rec_got += n;
            }
            match rx.state.read_message(rx.nonce, &rx.rec[..rx.rec_len], &mut rx.plain) {
                Ok(n) => rx.plain_len = n,
                Err(_) => {
                    rx.failed = true;
                    return Poll::Ready(Err(bad("a record failed to authenticate")));
                }
            }
            rx.nonce += 1;
            rx.plain_pos = 0;
            rx.hdr_got = 0;
            rx.rec_got = 0;
            rx.rec_len = 0;
        }
    }
}

struct Tx {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    /// An encrypted record, `out[out_pos..out_len]` not yet written.
    out: Vec<u8>,
    out_len: usize,
    out_pos: usize,
}

impl Tx {
    fn new(state: Arc<StatelessTransportState>) -> Tx {
        Tx {
            state,
            nonce: 0,
            out: vec![0; 2 + MAX_RECORD],
            out_len: 0,
            out_pos: 0,
        }
    }
}

/// The write half: plain, or each write sealed as records. Bytes are
/// accepted before they reach the socket: flush to push them out.
pub struct Writer<W> {
    inner: W,
    tx: Option<Box<Tx>>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(tx) = self.tx.as_deref_mut() else {
            return Poll::Ready(Ok(()));
        };
        while tx.out_pos < tx.out_len {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &tx.out[tx.out_pos..tx.out_len]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            tx.out_pos += n;
        }
        tx.out_len = 0;
        tx.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Writer<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tx.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_PLAIN);
        if let Some(tx) = this.tx.as_deref_mut() {
            let len = tx
                .state
                .write_message(tx.nonce, &buf[..n], &mut tx.out[2..])
                .map_err(|e| io::Error::other(e.to_string()))?;
            tx.out[..2].copy_from_slice(&(len as u16).to_be_bytes());
            tx.out_len = 2 + len;
            tx.out_pos = 0;
            tx.nonce += 1;
        }
        // Start sending now; what is left goes on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::conn::{handshake, read_frame, write_msg, ConnError};
    use crate::transport::net::AsyncStdNet;
    use crate::wire::{NodeId, PROTOCOL_VERSION};

    /// A connected pair over loopback: (dialer's side, listener's side).
    async fn pair() -> (Socket<AsyncStdNet>, Socket<AsyncStdNet>) {
        let net = AsyncStdNet;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_listener.local_addr().unwrap().port();
        drop(std_listener);
        let listener = net.listen(port).await.unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let (a, b) = futures_lite::future::zip(net.connect(addr), net.accept(&listener)).await;
        (a.unwrap(), b.unwrap())
    }

    /// Both sides' transport and hello exchange, run together.
    async fn connect(
        ka: Option<&ClusterKey>,
        kb: Option<&ClusterKey>,
    ) -> (
        Result<Connection<AsyncStdNet>, ConnError>,
        Result<Connection<AsyncStdNet>, ConnError>,
    ) {
        let (a, b) = pair().await;
        let side = |conn, key, initiator, me| async move {
            let mut link = establish::<AsyncStdNet>(conn, key, initiator).await?;
            handshake(&AsyncStdNet, &mut link, NodeId(me), NodeId(me), 1).await?;
            Ok::<_, ConnError>(link)
        };
        futures_lite::future::zip(side(a, ka, true, 1), side(b, kb, false, 2)).await
    }

    #[test]
    fn same_key_carries_big_frames_both_ways() {
        AsyncStdNet::block_on(async {
            let k = ClusterKey::from_bytes([7; 32]);
            let (a, b) = connect(Some(&k), Some(&k)).await;
            let (mut a, mut b) = (a.unwrap(), b.unwrap());
            let data: Vec<u8> = (0..3 * MAX_RECORD + 17).map(|i| (i * 31 % 251) as u8).collect();
            let msg = Message::Chunk { data };
            let send = async {
                write_msg(&mut a.writer, &msg, PROTOCOL_VERSION).await.unwrap();
                write_msg(&mut a.writer, &Message::Ping, PROTOCOL_VERSION).await.unwrap();
            };
            let recv = async {
                let first = read_frame(&mut b.reader).await.unwrap().0;
                let second = read_frame(&mut b.reader).await.unwrap().0;
                (first, second)
            };
            let ((), (first, second)) = futures_lite::future::zip(send, recv).await;
            assert_eq!(first, msg);
            assert_eq!(second, Message::Ping);
            write_msg(&mut b.writer, &Message::FileEnd, PROTOCOL_VERSION).await.unwrap();
            assert_eq!(read_frame(&mut a.reader).await.unwrap().0, Message::FileEnd);
        });
    }

    /// Our records are ring's ChaCha20-Poly1305, a peer of an older build
    /// seals with snow's own: the same cipher, so each reads the other.
    #[test]
    fn records_interoperate_with_snows_own_cipher() {
        AsyncStdNet::block_on(async {
            let k = ClusterKey::from_bytes([5; 32]);
            let (a, b) = pair().await;
            let psk = k.psk();
            let snows_own = Box::new(snow::resolvers::DefaultResolver);
            let theirs = snow::Builder::with_resolver(NOISE_PARAMS.parse().unwrap(), snows_own)
                .prologue(PROLOGUE)
                .unwrap()
                .psk(0, &psk)
                .unwrap()
                .build_responder()
                .unwrap();
            let (mut rb, mut wb) = (b.reader, b.writer);
            let (ours, state) =
                futures_lite::future::zip(secure_halves(a.reader, a.writer, Some(&k), true), respond(theirs, &mut rb, &mut wb)).await;
            let (mut ra, mut wa) = ours.unwrap();
            let state = Arc::new(state.unwrap());
            let mut rb = Reader {
                inner: rb,
                rx: Some(Box::new(Rx::new(state.clone()))),
            };
            let mut wb = Writer {
                inner: wb,
                tx: Some(Box::new(Tx::new(state))),
            };
            let msg = Message::Chunk {
                data: (0..2 * MAX_RECORD + 5).map(|i| (i % 253) as u8).collect(),
            };
            write_msg(&mut wa, &msg, PROTOCOL_VERSION).await.unwrap();
            assert_eq!(read_frame(&mut rb).await.unwrap().0, msg, "theirs opens ours");
            write_msg(&mut wb, &msg, PROTOCOL_VERSION).await.unwrap();
            assert_eq!(read_frame(&mut ra).await.unwrap().0, msg, "ours opens theirs");
        });
    }

    #[test]
    fn different_keys_are_refused_on_both_sides() {
        AsyncStdNet::block_on(async {
            let (a, b) = connect(Some(&ClusterKey::from_bytes([1; 32])), Some(&ClusterKey::from_bytes([2; 32]))).await;
            let (ea, eb) = (a.err().unwrap(), b.err().unwrap());
            assert!(matches!(ea, ConnError::Secure(SecureError::RefusedByPeer)), "dialer: {ea}");
            assert!(matches!(eb, ConnError::Secure(SecureError::KeyMismatch)), "listener: {eb}");
            assert!(ea.is_refusal() && eb.is_refusal());
        });
    }

    #[test]
    fn a_key_on_one_side_only_is_refused_on_both_sides() {
        AsyncStdNet::block_on(async {
            let k = ClusterKey::from_bytes([3; 32]);
            for (ka, kb) in [(Some(&k), None), (None, Some(&k))] {
                let (a, b) = connect(ka, kb).await;
                let (ea, eb) = (a.err().unwrap(), b.err().unwrap());
                assert!(ea.is_refusal(), "dialer (key {}): {ea}", ka.is_some());
                assert!(eb.is_refusal(), "listener (key {}): {eb}", kb.is_some());
            }
        });
    }

    #[test]
    fn a_tampered_record_ends_the_connection() {
        AsyncStdNet::block_on(async {
            let k = ClusterKey::from_bytes([9; 32]);
            let (a, b) = pair().await;
            // The dialer's records go through a tap that flips one bit.
            let (ra, wa) = (a.reader, a.writer);
            let (la, lb) =
                futures_lite::future::zip(secure_halves(ra, wa, Some(&k), true), establish::<AsyncStdNet>(b, Some(&k), false)).await;
            let (_, mut wa) = la.unwrap();
            let mut lb = lb.unwrap();
            let frame = wire::encode(&Message::Ping);
            let mut rec = vec![0u8; 2 + frame.len() + TAG];
            let st = wa.tx.as_ref().unwrap().state.clone();
            let n = st.write_message(0, &frame, &mut rec[2..]).unwrap();
            rec[..2].copy_from_slice(&(n as u16).to_be_bytes());
            rec[5] ^= 1;
            wa.inner.write_all(&rec[..n + 2]).await.unwrap();
            assert!(read_frame(&mut lb.reader).await.is_err());
        });
    }
}

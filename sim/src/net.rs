//! `TurmoilNet`: dirsync's `Net` trait over turmoil's simulated network and
//! the host's simulated tokio runtime.
//!
//! Owns: the mapping of every outside-world call the node makes (sockets,
//! tasks, sleep, clock) onto the simulation. Must not: reach a real socket,
//! a real thread or the real clock, or a seed would not replay.

use dirsync::transport::net::{Net, Socket};
use futures_lite::FutureExt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::{TcpListener, TcpStream, UdpSocket};

/// Where simulated wall-clock time starts: 2026-01-01T00:00:00Z.
pub const EPOCH_SECS: u64 = 1_767_225_600;

pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH_SECS)
}

/// Panics caught in tasks the node spawned. Without `tokio_unstable` a
/// panicking tokio task only fails its own `JoinHandle`, which nobody holds,
/// so `spawn` catches the panic here and the cluster fails the test with it.
#[derive(Clone, Debug, Default)]
pub struct Panics(Arc<Mutex<Vec<String>>>);

impl Panics {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn push(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }
}

/// `Net` over turmoil. Must be used from inside a turmoil host.
#[derive(Clone, Debug)]
pub struct TurmoilNet {
    panics: Panics,
    /// Name of the host, for panic reports.
    host: Arc<str>,
}

impl TurmoilNet {
    pub fn new(host: &str, panics: Panics) -> Self {
        TurmoilNet { panics, host: host.into() }
    }
}

fn split(stream: TcpStream, peer: SocketAddr) -> Socket<TurmoilNet> {
    let (r, w) = stream.into_split();
    Socket {
        reader: r.compat(),
        writer: w.compat_write(),
        peer,
    }
}

impl Net for TurmoilNet {
    type Reader = Compat<OwnedReadHalf>;
    type Writer = Compat<OwnedWriteHalf>;
    type Listener = TcpListener;
    type Udp = UdpSocket;

    async fn listen(&self, port: u16) -> io::Result<TcpListener> {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).await
    }

    /// Host names resolve through turmoil's DNS (`n0:6000`).
    async fn resolve(&self, target: &str) -> io::Result<Vec<SocketAddr>> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{target}: not HOST:PORT"));
        let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(vec![SocketAddr::new(turmoil::lookup(host), port)])
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<Socket<Self>> {
        let (stream, peer) = listener.accept().await?;
        Ok(split(stream, peer))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Socket<Self>> {
        // The same bound as production: a SYN lost to a partition would
        // otherwise wait forever.
        let timeout = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        };
        let stream = TcpStream::connect(addr).or(timeout).await?;
        Ok(split(stream, addr))
    }

    async fn bind_udp(&self, port: u16) -> io::Result<UdpSocket> {
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).await?;
        sock.set_broadcast(true)?;
        Ok(sock)
    }

    async fn send_to(&self, sock: &UdpSocket, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        sock.send_to(buf, to).await.map(|_| ())
    }

    async fn recv_from(&self, sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        sock.recv_from(buf).await
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        let panics = self.panics.clone();
        let host = self.host.clone();
        tokio::spawn(async move {
            if let Err(p) = AssertUnwindSafe(fut).catch_unwind().await {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                panics.push(format!("{host}: task panicked: {msg}"));
            }
        });
    }

    /// Runs `f` inline when polled: the simulation has one thread, and disk
    /// work takes no simulated time.
    async fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(&self, f: F) -> T {
        f()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + turmoil::since_epoch().expect("TurmoilNet::now called outside a turmoil host")
    }
}

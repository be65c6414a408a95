//! The node's only way to reach the outside world: sockets, tasks, sleep and
//! the clock. Production uses `AsyncStdNet`; the simulation in `sim/`
//! implements the same trait over turmoil, so the same node code runs in
//! both. Nothing else in the crate names a runtime.

mod async_std_net;

pub use async_std_net::AsyncStdNet;

use futures_lite::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// A connected stream, split into halves that two tasks can own.
pub struct Socket<N: Net> {
    pub reader: N::Reader,
    pub writer: N::Writer,
    pub peer: SocketAddr,
}

pub trait Net: Clone + Send + Sync + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;
    type Listener: Send + Sync + 'static;
    /// A UDP socket bound to the broadcast port, broadcast enabled, shared
    /// by the task that sends announcements and the one that receives them.
    type Udp: Send + Sync + 'static;

    /// Listen for TCP connections on `port` (all interfaces).
    fn listen(&self, port: u16) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    fn accept(&self, listener: &Self::Listener) -> impl Future<Output = io::Result<Socket<Self>>> + Send;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Socket<Self>>> + Send;

    /// The addresses `target` (`HOST:PORT`) stands for. This default takes
    /// literal addresses only; the production runtime resolves names.
    fn resolve(&self, target: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        let r = target
            .parse::<SocketAddr>()
            .map(|a| vec![a])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{target}: {e}")));
        async move { r }
    }

    /// Bind `port` for broadcast discovery, shared with other processes on
    /// the same host (SO_REUSEADDR/SO_REUSEPORT).
    fn bind_udp(&self, port: u16) -> impl Future<Output = io::Result<Self::Udp>> + Send;
    fn send_to(&self, sock: &Self::Udp, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
    fn recv_from(&self, sock: &Self::Udp, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// Run `fut` as a task of its own.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F);
    /// Run a blocking closure (disk IO, hashing) off the event loop.
    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(&self, f: F) -> impl Future<Output = T> + Send;
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
    /// Wall-clock time (simulated in the simulation).
    fn now(&self) -> SystemTime;
}

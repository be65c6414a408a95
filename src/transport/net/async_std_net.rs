//! `Net` over async-std: the production runtime. The only file that names
//! async-std, so moving to smol is a change here alone.

use super::{Net, Socket};
use async_std::net::{TcpListener, TcpStream, UdpSocket};
use socket2::{Domain, Protocol, Type};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdNet;

/// A TCP listener on `[::]:port` that takes IPv4 connections too.
fn dual_stack_listener(port: u16) -> io::Result<TcpListener> {
    let sock = socket2::Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_only_v6(false)?;
    // As std's bind does: a restarted node may take the port at once.
    sock.set_reuse_address(true)?;
    sock.bind(&SocketAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(TcpListener::from(std::net::TcpListener::from(sock)))
}

/// An IPv4 peer accepted on the dual-stack listener shows as
/// `[::ffff:a.b.c.d]`: give it its IPv4 address, as discovery sees it.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

impl AsyncStdNet {
    /// Run `fut` to completion on the async-std runtime.
    pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
        async_std::task::block_on(fut)
    }
}

fn split(stream: TcpStream, peer: SocketAddr) -> Socket<AsyncStdNet> {
    let _ = stream.set_nodelay(true);
    Socket {
        reader: stream.clone(),
        writer: stream,
        peer,
    }
}

impl Net for AsyncStdNet {
    type Reader = TcpStream;
    type Writer = TcpStream;
    type Listener = TcpListener;
    type Udp = UdpSocket;

    async fn listen(&self, port: u16) -> io::Result<TcpListener> {
        // Both families on one socket (`[::]` with IPV6_V6ONLY off), so a
        // peer given as `[::1]:PORT` or `[fe80::…]:PORT` connects too; IPv4
        // only where the host has no IPv6. No SO_REUSEPORT here: a second
        // node on the same port must fail.
        match dual_stack_listener(port) {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
            Err(_) => TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).await,
        }
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<Socket<Self>> {
        let (stream, peer) = listener.accept().await?;
        Ok(split(stream, unmapped(peer)))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Socket<Self>> {
        let stream = async_std::io::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await?;
        Ok(split(stream, addr))
    }

    async fn resolve(&self, target: &str) -> io::Result<Vec<SocketAddr>> {
        use async_std::net::ToSocketAddrs;
        Ok(target.to_socket_addrs().await?.collect())
    }

    async fn bind_udp(&self, port: u16) -> io::Result<UdpSocket> {
        let sock = socket2::Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_broadcast(true)?;
        sock.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
        sock.set_nonblocking(true)?;
        Ok(UdpSocket::from(std::net::UdpSocket::from(sock)))
    }

    async fn send_to(&self, sock: &UdpSocket, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        sock.send_to(buf, to).await.map(|_| ())
    }

    async fn recv_from(&self, sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        sock.recv_from(buf).await
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        async_std::task::spawn(fut);
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(&self, f: F) -> impl Future<Output = T> + Send {
        async_std::task::spawn_blocking(f)
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        async_std::task::sleep(d)
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

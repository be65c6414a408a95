//! Broadcast discovery: announce this node on the broadcast port at a
//! regular interval (and at once when woken, to answer a newcomer), and turn
//! the announcements of others into node events.
//!
//! Owns: the UDP socket's traffic. Must not: dial anyone (the node decides).

use crate::transport::net::Net;
use crate::wire::{Announce, MAX_DATAGRAM};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Send our announcement every `interval`, or sooner when `wake` fires;
/// say nothing while `suspended` (the node is not syncing).
pub async fn announce_loop<N: Net>(
    net: N,
    sock: Arc<N::Udp>,
    announce: Announce,
    to: SocketAddr,
    interval: Duration,
    wake: async_channel::Receiver<()>,
    suspended: Arc<AtomicBool>,
) {
    let bytes = announce.encode();
    let mut warned = false;
    loop {
        if suspended.load(Ordering::Relaxed) {
            // Nothing to send.
        } else if let Err(e) = net.send_to(&sock, &bytes, to).await {
            if !warned {
                warn!(%to, error = %e, "cannot send the discovery broadcast");
                warned = true;
            }
        }
        let woken = async {
            // A closed channel means the node is gone: stop announcing.
            wake.recv().await.is_ok()
        };
        let timer = async {
            net.sleep(interval).await;
            true
        };
        if !futures_lite::future::or(woken, timer).await {
            return;
        }
    }
}

/// Receive announcements and pass the valid ones to `deliver`; junk is
/// dropped with a debug line. Stops when `deliver` returns false.
pub async fn listen_loop<N: Net, F>(net: N, sock: Arc<N::Udp>, mut deliver: F)
where
    F: FnMut(SocketAddr, Announce) -> bool,
{
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match net.recv_from(&sock, &mut buf).await {
            Ok((n, from)) => match Announce::decode(&buf[..n]) {
                Ok(a) => {
                    if !deliver(from, a) {
                        return;
                    }
                }
                Err(e) => debug!(%from, error = %e, "ignoring datagram"),
            },
            Err(e) => {
                debug!(error = %e, "broadcast receive failed");
                net.sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
